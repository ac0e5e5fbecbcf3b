package bridge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/statefeed/statefeed/snapshot"
	"github.com/statefeed/statefeed/testenv"
)

// churnLimit bounds a churn: the snapshot must end while it runs.
const churnLimit = 1500

// seed inserts n customers (every tenth soft-deleted) and n orders.
func (e *env) seed(n int) {
	e.t.Helper()
	e.exec(fmt.Sprintf(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm, cty_nm, crd_lmt, rec_stat)
	        SELECT 'S' || lpad(i::text, 7, '0'), 'name ' || i, 'city ' || (i %% 50), i, CASE WHEN i %% 10 = 0 THEN 'D' ELSE 'A' END
	        FROM generate_series(1, %d) i`, n))
	e.exec(fmt.Sprintf(`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt, tags)
	        SELECT i, (SELECT min(cst_id) FROM legacy.cust_mstr), DATE '2026-01-01' + (i %% 300), i * 1.5, ARRAY['t' || (i %% 7)]
	        FROM generate_series(1, %d) i`, n))
}

// churn runs a random workload of updates, key changes, soft deletes,
// deletes and inserts on the seeded rows until stop is closed or it ran
// churnLimit statements, and returns how many statements it ran.
func (e *env) churn(stop <-chan struct{}, n int) int {
	e.t.Helper()
	conn := e.conn()
	defer conn.Close(context.Background())
	ctx := context.Background()
	next := n + 1
	ran := 0
	for {
		select {
		case <-stop:
			return ran
		default:
		}
		if ran == churnLimit {
			return ran
		}
		i := 1 + rand.IntN(n)
		var sql string
		switch rand.IntN(6) {
		case 0:
			sql = fmt.Sprintf(`UPDATE legacy.cust_mstr SET crd_lmt = crd_lmt + 1, cst_nm = 'churned %d' WHERE cst_cd = 'S%07d'`, ran, i)
		case 1:
			sql = fmt.Sprintf(`UPDATE legacy.cust_mstr SET cst_cd = 'K%07d' WHERE cst_cd = 'S%07d'`, i, i) // key change
		case 2:
			sql = fmt.Sprintf(`UPDATE legacy.cust_mstr SET rec_stat = CASE rec_stat WHEN 'D' THEN 'A' ELSE 'D' END WHERE cst_cd = 'S%07d'`, i)
		case 3:
			sql = fmt.Sprintf(`DELETE FROM legacy.ord_hdr WHERE ord_no = %d`, i)
		case 4:
			sql = fmt.Sprintf(`UPDATE legacy.ord_hdr SET stat_cd = 'SH', ord_amt = ord_amt + 1 WHERE ord_no = %d`, i)
		default:
			sql = fmt.Sprintf(`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt) SELECT %d, min(cst_id), '2026-02-01', 1 FROM legacy.cust_mstr`, 1_000_000+next)
			next++
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			e.t.Errorf("churn: %s: %v", sql, err)
			return ran
		}
		ran++
	}
}

// during runs churn on the n seeded rows while f runs, and returns how
// many statements it ran.
func (e *env) during(f func(), n int) int {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ran int
	wg.Go(func() { ran = e.churn(stop, n) })
	defer func() {
		close(stop)
		wg.Wait()
	}()
	f()
	return ran
}

// jobs reads the backfill jobs of the test's bridge.
func (e *env) jobs() []*snapshot.Job {
	e.t.Helper()
	producer, err := newProducer(e.cfg, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer producer.Close()
	jobs, err := snapshot.KafkaStore{Kafka: producer, Topic: e.cfg.progressTopic()}.Load(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return jobs
}

// waitJobs waits until every backfill job is finished, and fails the test
// if one failed.
func (e *env) waitJobs() []*snapshot.Job {
	e.t.Helper()
	var jobs []*snapshot.Job
	err := testenv.Eventually(context.Background(), raceSlowdown*60*time.Second, func(context.Context) (bool, string, error) {
		jobs = e.jobs()
		for _, j := range jobs {
			if j.State == snapshot.Failed {
				return false, "", fmt.Errorf("backfill %s failed: %s", j.ID, j.Error)
			}
			if j.State != snapshot.Done {
				return false, fmt.Sprintf("backfill %s is %s (%d rows)", j.ID, j.State, j.Rows), nil
			}
		}
		return len(jobs) > 0, "no backfill job yet", nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return jobs
}

func countOp(msgs []testenv.Message, op string) int {
	n := 0
	for _, m := range msgs {
		if m.Headers["ce_op"] == op {
			n++
		}
	}
	return n
}

// TestInitialSnapshot starts a bridge on tables that already hold rows and
// changes them while the snapshot reads them: the topics converge to the
// tables, the pre-existing rows arrive as snapshot records, and no
// filtered-out row is published.
func TestInitialSnapshot(t *testing.T) {
	e := newEnv(t)
	e.cfg.Snapshot.ChunkSize = 97
	const n = 3000
	e.seed(n)

	e.start()
	ran := e.during(func() { e.waitJobs() }, n)
	jobs := e.waitJobs()
	e.waitConverged()

	if len(jobs) != 1 || jobs[0].Reason != snapshot.Initial {
		t.Fatalf("jobs = %+v, want one initial snapshot", jobs)
	}
	snap := countOp(e.read("customer"), "snapshot") + countOp(e.read("order"), "snapshot")
	t.Logf("churn ran %d statements during the snapshot; %d snapshot records; job rows %d", ran, snap, jobs[0].Rows)
	if ran == 0 {
		t.Error("the workload did not run during the snapshot")
	}
	// 2,700 customers inside the filter and 3,000 orders existed; each
	// statement of the workload changes at most one row the snapshot
	// reads. Compaction may have removed snapshot records since
	// superseded by the stream.
	want := int64(n - n/10 + n)
	if rows := jobs[0].Rows; rows < want-int64(ran) || rows > want+int64(ran) {
		t.Errorf("the snapshot published %d rows, want %d ± %d", rows, want, ran)
	}
	if snap == 0 || int64(snap) > jobs[0].Rows {
		t.Errorf("the topics hold %d snapshot records, want 1 to %d", snap, jobs[0].Rows)
	}
}
