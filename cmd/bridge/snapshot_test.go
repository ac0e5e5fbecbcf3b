package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/statefeed/statefeed/publish"
	"github.com/statefeed/statefeed/snapshot"
	"github.com/statefeed/statefeed/testenv"
)

// jobs reads the backfill jobs from the default progress topic.
func (w *world) jobs(ctx context.Context) ([]*snapshot.Job, error) {
	p, err := publish.NewProducer(publish.Options{Brokers: w.broker.Addrs()})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return snapshot.KafkaStore{Kafka: p, Topic: "statefeed.backfills.legacy.statefeed"}.Load(ctx)
}

// TestKill9DuringSnapshot kills the bridge with SIGKILL in the middle of
// its initial snapshot while rows change, restarts it, and checks that the
// snapshot resumed where Kafka's acknowledgements left it, not from the
// start of the table, and that the topics converge.
func TestKill9DuringSnapshot(t *testing.T) {
	bin := buildBridge(t)
	w := newWorld(t, "snapshot: {chunk_size: 10, workers: 1}")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const rows = 6000
	if err := w.pg.Exec(ctx, "legacy", fmt.Sprintf(`
		INSERT INTO legacy.cust_mstr (cst_cd, cst_nm, crd_lmt) SELECT 'P' || i, 'name ' || i, i FROM generate_series(1, %d) i;
		INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt) SELECT i, i, '2026-01-01', i FROM generate_series(1, %d) i;`, rows, rows)); err != nil {
		t.Fatal(err)
	}

	first := w.start(t, bin)
	var progress atomic.Int64
	werr := make(chan error, 1)
	go func() { werr <- workload(ctx, w.dsn, 7, 300, &progress) }()

	var before *snapshot.Job
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) (bool, string, error) {
		jobs, err := w.jobs(ctx)
		if err != nil || len(jobs) != 1 {
			return false, fmt.Sprintf("jobs %d, err %v", len(jobs), err), nil
		}
		before = jobs[0]
		return before.Rows >= rows/2 && before.State == snapshot.Running, fmt.Sprintf("%d rows snapshotted", before.Rows), nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	t.Logf("killed with %d of about %d rows snapshotted and acknowledged", before.Rows, 2*rows)

	second := w.start(t, bin)
	var after *snapshot.Job
	if err := testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		jobs, err := w.jobs(ctx)
		if err != nil || len(jobs) != 1 {
			return false, fmt.Sprintf("jobs %d, err %v", len(jobs), err), nil
		}
		after = jobs[0]
		return after.State == snapshot.Done, fmt.Sprintf("job %s: %d rows", after.State, after.Rows), nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitConverged(ctx, time.Minute, w.dsn, w.broker.Addrs(), w.set); err != nil {
		t.Fatal(err)
	}
	// Rows are counted as Kafka acknowledges them. A restart from the
	// start of the tables would count every row again; resuming counts
	// at most the chunks that were in flight at the kill once more (one
	// per table with one worker) plus the rows the workload inserted.
	t.Logf("the job counted %d rows in all", after.Rows)
	if limit := int64(2*rows + 2*10 + 300*5); after.Rows > limit {
		t.Errorf("the job counted %d rows, more than %d: the snapshot started over instead of resuming after the %d rows acknowledged before the kill", after.Rows, limit, before.Rows)
	}
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Errorf("bridge after SIGTERM: %v", err)
	}
}
