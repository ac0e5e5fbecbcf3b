package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// The slots of a stream workload are created before the workload is
// written, so they all start at the same position, and dropped after it:
// one pair for each of the -repeat drains of each side.
func bridgeSlot(i int) string  { return fmt.Sprintf("bench_bridge_%d", i) }
func ceilingSlot(i int) string { return fmt.Sprintf("bench_ceiling_%d", i) }

// stream measures a stream workload. It creates the table, seeds it,
// creates the slots, writes the workload while nothing reads, and notes
// the end of the WAL. Then, -repeat times, pg_recvlogical drains one of
// the ceiling's slots up to that end, and the bridge drains one of its own
// until Kafka has acknowledged every record of the workload: the same WAL
// range, decoded by the same walsender code, in turn. Each side's fastest
// drain counts; the bridge's peak RSS is the highest of its drains.
func (e *env) stream(ctx context.Context, w streamWorkload) (res result, err error) {
	res = result{workload: w.table.name, ceiling: "pg_recvlogical"}
	conn, mappingFile, err := e.prepare(ctx, w.table)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var slots []string
	for i := range e.o.repeat {
		slots = append(slots, bridgeSlot(i+1), ceilingSlot(i+1))
	}
	defer func() { err = errors.Join(err, e.cleanup(ctx, conn, w.table, slots...)) }()
	if w.seed > 0 {
		if err := w.table.insertRows(ctx, conn, 1, w.seed); err != nil {
			return res, err
		}
	}
	for _, slot := range slots {
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
			return res, fmt.Errorf("create slot %s: %w", slot, err)
		}
	}

	start := time.Now()
	res.rows, err = w.write(ctx, conn, w.table)
	if err != nil {
		return res, err
	}
	end, err := walEnd(ctx, conn)
	if err != nil {
		return res, err
	}
	e.say("  wrote %d changes in %s; WAL range ends at %s", res.rows, time.Since(start).Round(time.Millisecond), end)

	for i := range e.o.repeat {
		ceiling, err := e.recvlogical(ctx, ceilingSlot(i+1), w.table.publication(), end)
		if err != nil {
			return res, err
		}
		if res.ceilingDrain == nil || ceiling.wall < res.ceilingDrain.wall {
			res.ceilingRate = float64(res.rows) / ceiling.wall.Seconds()
			res.ceilingDrain = &ceiling
		}
		bridge, u, err := e.drainBridge(ctx, w.table, bridgeSlot(i+1), mappingFile, res.rows)
		if err != nil {
			return res, err
		}
		if err := e.checkTopic(ctx, w.table.topic(), int64((i+1)*res.rows)); err != nil {
			return res, err
		}
		e.say("  drain %d of %d: pg_recvlogical %s, bridge %s", i+1, e.o.repeat, ceiling.wall.Round(time.Millisecond), bridge.wall.Round(time.Millisecond))
		peak := max(res.peakRSS, u.peakRSS)
		if res.bridgeDrain == nil || bridge.wall < res.bridgeDrain.wall {
			res.setBridge(res.rows, bridge.wall, u)
			res.bridgeDrain = &bridge
		}
		res.peakRSS = peak
	}
	return res, nil
}

// drainBridge runs the bridge on slot until Kafka has acknowledged rows
// records, and returns where the time and the CPU went.
func (e *env) drainBridge(ctx context.Context, t table, slot, mappingFile string, rows int) (drain, usage, error) {
	b, err := e.startBridge(ctx, t.name, t.publication(), slot, mappingFile, false)
	if err != nil {
		return drain{}, usage{}, err
	}
	ws, broker := e.watchWalsender(ctx, slot), selfCPU()
	acked, waitErr := b.waitPublished(ctx, int64(rows))
	d := drain{wall: acked.Sub(b.streaming), broker: selfCPU() - broker}
	d.walsender, err = ws.total()
	u, stopErr := b.stop()
	if err := errors.Join(waitErr, err, stopErr); err != nil {
		return d, u, err
	}
	d.client = u.cpu
	return d, u, nil
}

// walEnd returns the end of the WAL written so far, then switches to a
// new WAL segment, which flushes the WAL: the workload's commits were
// asynchronous, and walsenders send only flushed WAL. The switch record
// also gives a walsender that has decoded up to the end a later position
// to report, which is how pg_recvlogical learns that it reached the end.
func walEnd(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var text string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&text); err != nil {
		return 0, fmt.Errorf("read the end of the WAL: %w", err)
	}
	end, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return 0, fmt.Errorf("read the end of the WAL: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		return 0, fmt.Errorf("flush the WAL: %w", err)
	}
	return end, nil
}

// recvlogical drains slot with pg_recvlogical up to end and returns how
// long the process ran and the CPU it and its walsender used.
func (e *env) recvlogical(ctx context.Context, slot, publication string, end pglogrepl.LSN) (drain, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.pg.BinDir(), "pg_recvlogical"),
		"--dbname", e.dsn, "--slot", slot, "--start",
		"--option", "proto_version=1", "--option", "publication_names="+publication,
		"--endpos", end.String(), "--file", "/dev/null", "--fsync-interval", "0", "--no-loop")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ws := e.watchWalsender(ctx, slot)
	start := time.Now()
	err := cmd.Run()
	d := drain{wall: time.Since(start)}
	cpu, wsErr := ws.total()
	if err != nil {
		return d, fmt.Errorf("pg_recvlogical: %w\n%s", err, out.Bytes())
	}
	d.walsender = cpu
	d.client = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return d, wsErr
}

// cleanup drops what a workload created: its slots (the bridge must have
// stopped), publication, table and topic.
func (e *env) cleanup(ctx context.Context, conn *pgx.Conn, t table, slots ...string) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, slot := range slots {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
		if err != nil {
			errs = append(errs, fmt.Errorf("drop slot %s: %w", slot, err))
		}
	}
	errs = append(errs, t.drop(ctx, conn))
	if err := e.deleteTopic(ctx, t.topic()); err != nil && !isUnknownTopic(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkTopic fails unless the topic holds exactly want records: the bridge
// published every change once, and no more.
func (e *env) checkTopic(ctx context.Context, topic string, want int64) error {
	got, err := e.topicRecords(ctx, topic)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("topic %s holds %d records; the workload made %d changes", topic, got, want)
	}
	return nil
}
