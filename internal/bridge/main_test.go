package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/testenv"
)

// One PostgreSQL cluster and one broker serve the package's integration
// tests; each test gets its own database, slot, publication and topics.
var (
	pg     *testenv.Postgres
	broker *testenv.Broker
)

func TestMain(m *testing.M) {
	ctx := context.Background()
	var err error
	if pg, err = testenv.StartPostgres(ctx, testenv.PostgresOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "start PostgreSQL:", err)
		os.Exit(1)
	}
	if broker, err = testenv.StartBroker(ctx, testenv.BrokerOptions{Proxied: true}); err != nil {
		pg.Close()
		fmt.Fprintln(os.Stderr, "start broker:", err)
		os.Exit(1)
	}
	code := m.Run()
	broker.Close()
	pg.Close()
	os.Exit(code)
}

// env is one test's database, mappings and configuration.
type env struct {
	t      *testing.T
	db     string
	dsn    string
	prefix string // topic prefix
	cfg    *Config
	set    *mapping.Set
	logs   *lockedBuffer // everything the bridges of the test logged
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// newEnv creates a database with the example legacy schema, writes the
// example mappings with topics prefixed by the test's name, and returns a
// configuration for them.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	name := strings.Trim(nonWord.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	e := &env{t: t, db: name, prefix: name + ".", logs: &lockedBuffer{}}
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	e.dsn = pg.DSN(name)
	schema, err := os.ReadFile("../../examples/legacy/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	e.exec(string(schema))

	dir := t.TempDir()
	files, _ := filepath.Glob("../../examples/legacy/mappings/*.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = regexp.MustCompile(`(?m)^topic: `).ReplaceAll(b, []byte("topic: "+e.prefix))
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.File = filepath.Join(dir, "config.yaml")
	cfg.Source.DSN = e.dsn
	cfg.Source.Name = name
	cfg.Source.Slot = name
	cfg.Source.Publication = name
	cfg.Source.StatusInterval = 500 * time.Millisecond
	cfg.Kafka.Brokers = broker.Addrs()
	cfg.Kafka.TopicDefaults.Partitions = 3
	cfg.Mappings = []string{dir}
	cfg.ShutdownTimeout = 20 * time.Second
	// Tests of the stream count what the stream publishes; the snapshot
	// tests ask for the initial snapshot themselves.
	cfg.Snapshot.Mode = "never"
	e.cfg = &cfg
	if e.set, err = mapping.Load(cfg.Mappings); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.dropSlot() })
	return e
}

// conn connects to the test's database; the caller closes it.
func (e *env) conn() *pgx.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	return conn
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := e.conn()
	defer conn.Close(ctx)
	if len(args) == 0 {
		if err := conn.PgConn().Exec(ctx, sql).Close(); err != nil {
			e.t.Fatalf("exec %q: %v", sql, err)
		}
		return
	}
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		e.t.Fatalf("exec %q: %v", sql, err)
	}
}

func (e *env) queryString(sql string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := e.conn()
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		e.t.Fatalf("query %q: %v", sql, err)
	}
	return s
}

func (e *env) dropSlot() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	// The walsender may take a moment to release the slot after the bridge stops.
	_ = testenv.Eventually(ctx, 20*time.Second, func(ctx context.Context) (bool, string, error) {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", e.db)
		return err == nil, fmt.Sprint(err), nil
	})
}

// bridge is a running bridge in this process.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs the bridge with e's configuration until stop.
func (e *env) start() *running {
	e.t.Helper()
	return e.startWith(RunOptions{})
}

// startWith runs the bridge with e's configuration and opts until stop.
func (e *env) startWith(opts RunOptions) *running {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{e.t}, e.logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() {
		err := Run(ctx, e.cfg, log, opts)
		if err != nil {
			log.Info("Run returned", "err", err)
		}
		r.done <- err
	}()
	e.t.Cleanup(func() { r.stop() })
	// Wait until the bridge streams: tests write changes for the stream.
	active := `SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = '` + e.db + `'), false)::text`
	err := testenv.Eventually(context.Background(), 30*time.Second, func(context.Context) (bool, string, error) {
		select {
		case err := <-r.done:
			r.done <- err
			return true, "", nil // stopped at once; the test looks at why
		default:
		}
		return e.queryString(active) == "true", "the bridge is not streaming yet", nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// stop stops the bridge gracefully and returns what Run returned.
func (r *running) stop() error {
	r.cancel()
	err, ok := <-r.done
	if ok {
		close(r.done)
	}
	return err
}

// wait returns what Run returned when it stops by itself.
func (r *running) wait(timeout time.Duration) (error, bool) {
	select {
	case err := <-r.done:
		close(r.done)
		return err, true
	case <-time.After(timeout):
		return nil, false
	}
}

func (e *env) waitConverged() {
	e.t.Helper()
	ctx := context.Background()
	if err := testenv.WaitConverged(ctx, raceSlowdown*60*time.Second, e.dsn, broker.Addrs(), e.set); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) topic(entity string) string {
	for _, m := range e.set.Mappings {
		if m.Entity == entity {
			return m.Topic
		}
	}
	e.t.Fatalf("no entity %s", entity)
	return ""
}

func (e *env) read(entity string) []testenv.Message {
	e.t.Helper()
	msgs, err := testenv.ReadTopic(context.Background(), broker.Addrs(), e.topic(entity))
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
