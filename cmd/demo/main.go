// Command demo runs statefeed end to end on throwaway infrastructure: a
// temporary PostgreSQL cluster with a small legacy schema, an embedded
// Kafka-protocol broker, and the bridge configured by config.example.yaml
// with the example mappings. It applies inserts, updates, a key change, a
// soft delete and a hard delete, then prints what landed in each topic and
// the topic's compacted view.
//
// Run it from the repository: go run ./cmd/demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/statefeed/statefeed/internal/bridge"
	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/testenv"
)

func main() {
	verbose := flag.Bool("v", false, "show the bridge's log")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// repoRoot finds the directory holding config.example.yaml, from the
// working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "config.example.yaml")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("config.example.yaml not found: run the demo from the statefeed repository (go run ./cmd/demo)")
		}
		dir = parent
	}
}

func run(ctx context.Context, out io.Writer, verbose bool) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	say("== starting a throwaway PostgreSQL (wal_level=logical) and an embedded Kafka broker")
	pg, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{})
	if err != nil {
		return err
	}
	defer pg.Close()
	broker, err := testenv.StartBroker(ctx, testenv.BrokerOptions{})
	if err != nil {
		return err
	}
	defer broker.Close()
	if err := pg.CreateDatabase(ctx, "legacy"); err != nil {
		return err
	}
	schema, err := os.ReadFile(filepath.Join(root, "examples/legacy/schema.sql"))
	if err != nil {
		return err
	}
	if err := pg.Exec(ctx, "legacy", string(schema)); err != nil {
		return fmt.Errorf("load the sample schema: %w", err)
	}
	say("   PostgreSQL on 127.0.0.1:%d, broker on %s, sample schema from examples/legacy/schema.sql", pg.Port(), broker.Addrs()[0])
	say("-- a customer that exists before the bridge starts: the initial snapshot publishes it")
	if err := pg.Exec(ctx, "legacy", `INSERT INTO legacy.cust_mstr (cst_id, cst_cd, cst_nm, cty_nm, ctry_cd, crd_lmt, upd_ts)
		VALUES (999, 'C-0999', 'Charles Babbage', 'London', 'GB', 300, '2025-12-01 08:00:00+00')`); err != nil {
		return err
	}

	dsn := pg.DSN("legacy")
	env := map[string]string{"STATEFEED_SOURCE_DSN": dsn, "STATEFEED_KAFKA_BROKERS": broker.Addrs()[0]}
	cfg, err := bridge.LoadConfig(filepath.Join(root, "config.example.yaml"), func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		return err
	}
	cfg.Source.StatusInterval = time.Second
	set, err := mapping.Load(cfg.Mappings)
	if err != nil {
		return err
	}

	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	bctx, stopBridge := context.WithCancel(ctx)
	done := make(chan error, 1)
	say("== starting the bridge with config.example.yaml and examples/legacy/mappings")
	go func() { done <- bridge.Run(bctx, cfg, log, bridge.RunOptions{}) }()
	stopped := false
	defer func() {
		if !stopped {
			stopBridge()
			<-done
		}
	}()
	// Wait until the bridge streams: the steps below are meant to reach
	// it as changes, after the initial snapshot's rows.
	if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		select {
		case err := <-done:
			return false, "", fmt.Errorf("bridge stopped: %w", err)
		default:
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return false, "", err
		}
		defer conn.Close(ctx)
		var active bool
		err = conn.QueryRow(ctx, "SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = $1), false)", cfg.Source.Slot).Scan(&active)
		return active, "the bridge has not started streaming", err
	}); err != nil {
		return err
	}

	steps := []struct{ what, sql string }{
		{"insert three customers and two orders (one with a 200 kB memo)", `
			INSERT INTO legacy.cust_mstr (cst_cd, cst_nm, eml_addr, cty_nm, ctry_cd, crd_lmt, rec_stat, upd_ts) VALUES
			  ('C-1001', 'Ada Lovelace  ', 'ada@example.org', 'London', 'GB', 1500.50, 'A', '2026-01-10 09:00:00+01'),
			  ('C-1002', 'Grace Hopper', 'grace@example.org', 'Arlington', 'US', 900, 'A', '2026-01-10 09:00:00+01'),
			  ('C-1003', 'Alan Turing', NULL, 'Wilmslow', 'GB', 0, 'I', '2026-01-10 09:00:00+01');
			INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt, stat_cd, itm_cnt, tags, ord_memo) VALUES
			  (5001, 1, '2026-01-15', 129.90, 'OP', 3, ARRAY['rush','gift'], repeat('memo ', 40000)),
			  (5002, 2, '2026-01-16', 15.00, 'OP', 1, NULL, 'small');`},
		{"update a customer's credit limit", `UPDATE legacy.cust_mstr SET crd_lmt = 2000, upd_ts = '2026-01-20 12:00:00+01' WHERE cst_cd = 'C-1001'`},
		{"ship order 5001 (the large memo is not rewritten: TOAST unchanged)", `UPDATE legacy.ord_hdr SET stat_cd = 'SH' WHERE ord_no = 5001`},
		{"change customer C-1003's business code to C-2003 (key change)", `UPDATE legacy.cust_mstr SET cst_cd = 'C-2003' WHERE cst_cd = 'C-1003'`},
		{"soft-delete customer C-1002 (rec_stat = 'D')", `UPDATE legacy.cust_mstr SET rec_stat = 'D' WHERE cst_cd = 'C-1002'`},
		{"delete order 5002", `DELETE FROM legacy.ord_hdr WHERE ord_no = 5002`},
	}
	for _, s := range steps {
		say("-- %s", s.what)
		if err := pg.Exec(ctx, "legacy", s.sql); err != nil {
			return err
		}
	}

	say("== waiting until every topic's compacted view equals the mappings applied to the source")
	start := time.Now()
	if err := testenv.WaitConverged(ctx, time.Minute, dsn, broker.Addrs(), set); err != nil {
		return err
	}
	say("   converged in %s", time.Since(start).Round(time.Millisecond))

	for _, m := range set.Mappings {
		msgs, err := testenv.ReadTopic(ctx, broker.Addrs(), m.Topic)
		if err != nil {
			return err
		}
		say("\n== topic %s (entity %s, table %s): %d records", m.Topic, m.Entity, m.Table, len(msgs))
		for _, msg := range msgs {
			v := "TOMBSTONE (null value)"
			if !msg.Tombstone {
				v = shorten(string(msg.Value))
			}
			say("   p%d@%-3d %-8s key=%-8s %s", msg.Partition, msg.Offset, msg.Headers["ce_op"], msg.Key, v)
		}
		view := testenv.CompactedView(msgs)
		keys := make([]string, 0, len(view))
		for k := range view {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		say("   compacted view (what a consumer reading from the start ends up with):")
		for _, k := range keys {
			say("     %-8s → %s", k, shorten(string(view[k])))
		}
	}
	// One record's headers: the CloudEvents attributes and the pointers
	// to the change that caused it.
	msgs, err := testenv.ReadTopic(ctx, broker.Addrs(), set.Mappings[0].Topic)
	if err != nil {
		return err
	}
	if len(msgs) > 0 {
		last := msgs[len(msgs)-1]
		say("\n== headers of the last record of %s (a tombstone carries the same)", set.Mappings[0].Topic)
		names := make([]string, 0, len(last.Headers))
		for k := range last.Headers {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			say("   %-15s %s", k, last.Headers[k])
		}
	}
	stopBridge()
	stopped = true
	if err := <-done; err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	var confirmed, current string
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = $1", cfg.Source.Slot).Scan(&confirmed, &current); err != nil {
		return err
	}
	say("\n== bridge stopped cleanly; slot %q confirmed at %s (WAL at %s): nothing unpublished is confirmed", cfg.Source.Slot, confirmed, current)
	say("\nThe deleted order, the soft-deleted customer and the old key C-1003 are gone from the")
	say("compacted views: their tombstones remove them. Next: docs/getting-started.md to point the bridge")
	say("at a database of your own, docs/message-contract.md for what consumers can rely on.")
	return nil
}

// shorten keeps long values (the 200 kB memo) readable.
func shorten(s string) string {
	const max = 240
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("…(%d bytes)", len(s))
}
