package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/testenv"
)

// buildBridge compiles this command into a temporary directory.
func buildBridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bridge")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// world is a database with the example schema, a broker, and a
// configuration file for the example mappings.
type world struct {
	pg     *testenv.Postgres
	broker *testenv.Broker
	dsn    string
	config string
	set    *mapping.Set
}

// newWorld returns a world; extra is appended to the configuration file.
func newWorld(t *testing.T, extra ...string) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{pg: testenv.NewPostgres(t), broker: testenv.NewBroker(t)}
	if err := w.pg.CreateDatabase(ctx, "legacy"); err != nil {
		t.Fatal(err)
	}
	w.dsn = w.pg.DSN("legacy")
	schema, err := os.ReadFile("../../examples/legacy/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.pg.Exec(ctx, "legacy", string(schema)); err != nil {
		t.Fatal(err)
	}
	mappings, err := filepath.Abs("../../examples/legacy/mappings")
	if err != nil {
		t.Fatal(err)
	}
	if w.set, err = mapping.Load([]string{mappings}); err != nil {
		t.Fatal(err)
	}
	w.config = filepath.Join(t.TempDir(), "bridge.yaml")
	cfg := fmt.Sprintf(`source:
  dsn: ${TEST_DSN}
  slot: statefeed
  publication: statefeed
  status_interval: 1s
kafka:
  brokers: [%q]
  topic_defaults: {partitions: 3}
mappings: [%q]
%s`, w.broker.Addrs()[0], mappings, strings.Join(extra, "\n"))
	if err := os.WriteFile(w.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// start runs the bridge binary; its output goes to the test log.
func (w *world) start(t *testing.T, bin string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "run", "--config", w.config)
	cmd.Env = append(os.Environ(), "TEST_DSN="+w.dsn)
	cmd.Stdout = logWriter{t}
	cmd.Stderr = logWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	// Wait until it streams: the slot is active and the topics exist.
	ctx := context.Background()
	err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		conn, err := pgx.Connect(ctx, w.dsn)
		if err != nil {
			return false, "", err
		}
		defer conn.Close(ctx)
		var active bool
		if err := conn.QueryRow(ctx, "SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = 'statefeed'), false)").Scan(&active); err != nil {
			return false, "", err
		}
		return active, "the bridge is not streaming yet", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

type logWriter struct{ t *testing.T }

func (l logWriter) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// workload runs random inserts, updates, key changes, soft and hard
// deletes of customers and orders, one transaction at a time, until ctx
// ends or n transactions are done, counting them in done.
func workload(ctx context.Context, dsn string, seed uint64, n int, done *atomic.Int64) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	r := rand.New(rand.NewPCG(seed, 1))
	stmts := []string{
		`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm, crd_lmt) VALUES ('W' || nextval('legacy.cust_mstr_cst_id_seq'), 'name', $1)`,
		`UPDATE legacy.cust_mstr SET crd_lmt = crd_lmt + $1 WHERE cst_id = (SELECT cst_id FROM legacy.cust_mstr ORDER BY random() LIMIT 1)`,
		`UPDATE legacy.cust_mstr SET cst_cd = 'X' || cst_id || '_' || $1::int WHERE cst_id = (SELECT cst_id FROM legacy.cust_mstr ORDER BY random() LIMIT 1)`,
		`UPDATE legacy.cust_mstr SET rec_stat = CASE rec_stat WHEN 'D' THEN 'A' ELSE 'D' END WHERE cst_id = (SELECT cst_id FROM legacy.cust_mstr ORDER BY random() LIMIT 1) AND $1::int >= 0`,
		`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt) SELECT coalesce(max(ord_no), 0) + 1, (SELECT min(cst_id) FROM legacy.cust_mstr), current_date, $1 FROM legacy.ord_hdr HAVING (SELECT min(cst_id) FROM legacy.cust_mstr) IS NOT NULL`,
		`UPDATE legacy.ord_hdr SET ord_amt = ord_amt + $1, stat_cd = 'UP' WHERE ord_no = (SELECT ord_no FROM legacy.ord_hdr ORDER BY random() LIMIT 1)`,
		`DELETE FROM legacy.ord_hdr WHERE ord_no = (SELECT ord_no FROM legacy.ord_hdr ORDER BY random() LIMIT 1) AND $1::int >= 0`,
	}
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return nil
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		for range 1 + r.IntN(5) {
			if _, err := tx.Exec(ctx, stmts[r.IntN(len(stmts))], r.IntN(100)); err != nil {
				tx.Rollback(ctx)
				return err
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		done.Add(1)
	}
	return nil
}

// TestKill9Converges kills the bridge process with SIGKILL in the middle of
// a stream of changes, restarts it, and checks that the topics converge to
// the source: at-least-once delivery, nothing lost.
func TestKill9Converges(t *testing.T) {
	bin := buildBridge(t)
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	first := w.start(t, bin)
	const total = 600
	var progress atomic.Int64
	werr := make(chan error, 1)
	go func() { werr <- workload(ctx, w.dsn, 42, total, &progress) }()

	// Kill once a third of the transactions are written and the bridge has
	// published some of them.
	var killedAt string
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) (bool, string, error) {
		msgs, err := testenv.ReadTopic(ctx, w.broker.Addrs(), "crm.customer.v1")
		if err != nil {
			return false, "", err
		}
		written := int(progress.Load())
		select {
		case err := <-werr:
			if err != nil {
				return false, "", fmt.Errorf("workload: %w", err)
			}
			werr <- nil
		default:
		}
		if written == 0 {
			return false, "waiting for the workload", nil
		}
		killedAt = fmt.Sprintf("%d of %d transactions written, %d customer records published", written, total, len(msgs))
		return written >= total/3 && len(msgs) > 20, killedAt, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := first.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("bridge did not die of SIGKILL: %v", err)
	}
	t.Logf("bridge killed with SIGKILL (%s); restarting while the workload goes on", killedAt)

	second := w.start(t, bin)
	if err := <-werr; err != nil {
		t.Fatalf("workload: %v", err)
	}
	if err := testenv.WaitConverged(ctx, 2*time.Minute, w.dsn, w.broker.Addrs(), w.set); err != nil {
		t.Fatal(err)
	}
	for _, m := range w.set.Mappings {
		msgs, err := testenv.ReadTopic(ctx, w.broker.Addrs(), m.Topic)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("converged: topic %s holds %d records, %d live keys", m.Topic, len(msgs), len(testenv.CompactedView(msgs)))
	}

	// A graceful stop exits 0.
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Errorf("bridge after SIGTERM: %v, want exit status 0", err)
	}
}

// TestKcatSeesTombstones reads a topic with kcat, an independent Kafka
// client: a deleted entity is a record with the key and a null value.
func TestKcatSeesTombstones(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is not installed (Debian: apt-get install -y kcat); this interop test needs it")
	}
	bin := buildBridge(t)
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := w.start(t, bin)
	if err := w.pg.Exec(ctx, "legacy", `
		INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) VALUES ('KC1', 'kept'), ('KC2', 'gone');
		DELETE FROM legacy.cust_mstr WHERE cst_cd = 'KC2';`); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitConverged(ctx, time.Minute, w.dsn, w.broker.Addrs(), w.set); err != nil {
		t.Fatal(err)
	}
	b.Process.Signal(syscall.SIGTERM)
	b.Wait()

	// -Z prints a null value as NULL; %S is the value's size, -1 for null.
	out, err := exec.CommandContext(ctx, kcat, "-b", w.broker.Addrs()[0], "-C", "-t", "crm.customer.v1",
		"-e", "-q", "-Z", "-f", "%k|%S|%h|%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	var kept, tomb bool
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 4)
		if len(parts) != 4 {
			t.Fatalf("kcat line %q", line)
		}
		switch {
		case parts[0] == "KC1" && strings.Contains(parts[3], `"name":"kept"`):
			kept = true
		case parts[0] == "KC2" && parts[1] == "-1" && parts[3] == "NULL":
			tomb = true
			if !strings.Contains(parts[2], "ce_type=customer") || !strings.Contains(parts[2], "ce_op=delete") {
				t.Errorf("tombstone headers %q lack ce_type/ce_op", parts[2])
			}
		}
	}
	if !kept || !tomb {
		t.Errorf("kcat output lacks the state of KC1 (%v) or the tombstone of KC2 (%v):\n%s", kept, tomb, bytes.TrimSpace(out))
	}
}
