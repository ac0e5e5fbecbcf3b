package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statefeed/statefeed/testenv"
)

// env is what the workloads run against. One workload runs at a time.
type env struct {
	o      options
	pg     *testenv.Postgres
	broker *testenv.Broker
	adm    *kadm.Client
	dsn    string // the bench database
	bridge string // the bridge binary
	dir    string // configuration and mapping files
	log    io.Writer
}

// database is the database the workloads write to; every table is in the
// schema of the same name.
const database = "bench"

// measure runs the selected workloads in their canonical order and returns
// one result per measured row of the table.
func measure(ctx context.Context, o options, log io.Writer) ([]result, error) {
	dir, err := os.MkdirTemp("", "statefeed-bench-")
	if err != nil {
		return nil, fmt.Errorf("create a temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	e := &env{o: o, dir: dir, log: log, bridge: o.bridgeBin}
	if e.bridge == "" {
		e.say("building the bridge")
		if e.bridge, err = buildBridge(ctx, dir); err != nil {
			return nil, err
		}
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return nil, fmt.Errorf("-profile: %w", err)
		}
	}

	e.say("starting PostgreSQL and the broker")
	e.pg, err = testenv.StartPostgres(ctx, testenv.PostgresOptions{Settings: map[string]string{
		// Room for the tables and the WAL of one workload, so that
		// checkpoints and evictions do not land in the middle of a drain.
		"shared_buffers": "512MB",
		"max_wal_size":   "8GB",
	}})
	if err != nil {
		return nil, err
	}
	defer e.pg.Close()
	// In memory and without compaction: the broker's background work is
	// not the bridge's, and it runs in this process.
	e.broker, err = testenv.StartBroker(ctx, testenv.BrokerOptions{InMemory: true, CompactEvery: 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	defer e.broker.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.broker.Addrs()...))
	if err != nil {
		return nil, fmt.Errorf("kafka admin client: %w", err)
	}
	defer cl.Close()
	e.adm = kadm.NewClient(cl)

	if err := e.pg.CreateDatabase(ctx, database); err != nil {
		return nil, err
	}
	e.dsn = e.pg.DSN(database)
	if err := e.pg.Exec(ctx, database, "CREATE SCHEMA "+database); err != nil {
		return nil, err
	}

	var results []result
	for _, name := range workloadNames {
		if !slices.Contains(o.workloads, name) {
			continue
		}
		e.say("%s", name)
		start := time.Now()
		rs, err := e.runWorkload(ctx, name)
		if err != nil {
			return results, fmt.Errorf("workload %s: %w", name, err)
		}
		for _, r := range rs {
			e.say("  %s", r.summary())
		}
		e.say("  done in %s", time.Since(start).Round(100*time.Millisecond))
		results = append(results, rs...)
	}
	return results, nil
}

func (e *env) runWorkload(ctx context.Context, name string) ([]result, error) {
	switch name {
	case "snapshot":
		r, err := e.snapshot(ctx)
		return []result{r}, err
	case "latency":
		var rs []result
		for _, rate := range e.o.rates {
			r, err := e.latency(ctx, rate)
			if err != nil {
				return rs, err
			}
			rs = append(rs, r)
		}
		return rs, nil
	}
	w, ok := streamWorkloads(e.o)[name]
	if !ok {
		return nil, errors.New("no such workload")
	}
	r, err := e.stream(ctx, w)
	return []result{r}, err
}

func (e *env) say(format string, args ...any) {
	fmt.Fprintf(e.log, "bench: "+format+"\n", args...)
}

// buildBridge compiles ./cmd/bridge of the module the working directory is
// in.
func buildBridge(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "bridge")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/statefeed/statefeed/cmd/bridge")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the bridge (run the bench from the statefeed repository, or pass -bridge): %w\n%s", err, out)
	}
	return bin, nil
}

// connect opens a connection to the bench database.
func (e *env) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to the bench database: %w", err)
	}
	return conn, nil
}

// prepare connects to the bench database and creates t with its
// publication and mapping file. The caller closes conn.
func (e *env) prepare(ctx context.Context, t table) (conn *pgx.Conn, mappingFile string, err error) {
	if conn, err = e.connect(ctx); err != nil {
		return nil, "", err
	}
	if mappingFile, err = t.setup(ctx, conn, e.dir); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, "", err
	}
	return conn, mappingFile, nil
}

// deleteTopic deletes a topic the workload wrote, so that the in-memory
// broker does not carry it into the next workload.
func (e *env) deleteTopic(ctx context.Context, topic string) error {
	resp, err := e.adm.DeleteTopics(ctx, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	return nil
}

// topicRecords returns how many records a topic holds: the sum of its
// partitions' end offsets.
func (e *env) topicRecords(ctx context.Context, topic string) (int64, error) {
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list end offsets of topic %s: %w", topic, err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n, nil
}

func isUnknownTopic(err error) bool { return errors.Is(err, kerr.UnknownTopicOrPartition) }
