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

// The slots of a stream workload: both are created before the workload is
// written, so both start at the same position, and dropped after it.
const (
	bridgeSlot  = "bench_bridge"
	ceilingSlot = "bench_ceiling"
)

// stream measures a stream workload. It creates the table, seeds it,
// creates both slots, writes the workload while nothing reads, and notes
// the end of the WAL. Then pg_recvlogical drains the ceiling's slot up to
// that end, and the bridge drains its own slot until Kafka has
// acknowledged every record of the workload: the same WAL range, decoded
// by the same walsender code, in turn.
func (e *env) stream(ctx context.Context, w streamWorkload) (res result, err error) {
	res = result{workload: w.table.name, ceiling: "pg_recvlogical"}
	conn, err := e.connect(ctx)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	mappingFile, err := w.table.setup(ctx, conn, e.dir)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, e.cleanup(ctx, conn, w.table, bridgeSlot, ceilingSlot)) }()
	if w.seed > 0 {
		if err := w.table.insertRows(ctx, conn, 1, w.seed); err != nil {
			return res, err
		}
	}
	for _, slot := range []string{bridgeSlot, ceilingSlot} {
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

	ceiling, err := e.recvlogical(ctx, w.table.publication(), end)
	if err != nil {
		return res, err
	}
	res.ceilingRate = float64(res.rows) / ceiling.wall.Seconds()
	res.ceilingDrain = &ceiling

	b, err := e.startBridge(ctx, w.table.name, w.table.publication(), bridgeSlot, mappingFile)
	if err != nil {
		return res, err
	}
	ws, broker := e.watchWalsender(ctx, bridgeSlot), selfCPU()
	acked, waitErr := b.waitPublished(ctx, int64(res.rows))
	bridge := drain{wall: acked.Sub(b.streaming), broker: selfCPU() - broker}
	bridge.walsender, err = ws.total()
	usage, stopErr := b.stop()
	if err := errors.Join(waitErr, err, stopErr); err != nil {
		return res, err
	}
	res.setBridge(res.rows, bridge.wall, usage)
	bridge.client = usage.cpu
	res.bridgeDrain = &bridge
	return res, e.checkTopic(ctx, w.table.topic(), int64(res.rows))
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

// recvlogical drains the ceiling's slot with pg_recvlogical up to end and
// returns how long the process ran and the CPU it and its walsender used.
func (e *env) recvlogical(ctx context.Context, publication string, end pglogrepl.LSN) (drain, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.pg.BinDir(), "pg_recvlogical"),
		"--dbname", e.dsn, "--slot", ceilingSlot, "--start",
		"--option", "proto_version=1", "--option", "publication_names="+publication,
		"--endpos", end.String(), "--file", "/dev/null", "--fsync-interval", "0", "--no-loop")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ws := e.watchWalsender(ctx, ceilingSlot)
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
