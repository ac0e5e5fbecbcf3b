package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
func (e *env) during(f func(), n int) (ran int) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var churned int
	wg.Go(func() { churned = e.churn(stop, n) })
	defer func() {
		close(stop)
		wg.Wait()
		ran = churned
	}()
	f()
	return 0
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
	e.cfg.Snapshot.Mode = "initial"
	e.cfg.Snapshot.ChunkSize = 23
	const n = 3000
	e.seed(n)

	e.start()
	ran := e.during(func() { e.waitJobs() }, n)
	jobs := e.waitJobs()
	e.waitConverged()

	if len(jobs) != 1 || jobs[0].Reason != snapshot.Initial {
		t.Fatalf("jobs = %+v, want one initial snapshot", jobs)
	}
	customers, orders := e.read("customer"), e.read("order")
	snap := countOp(customers, "snapshot") + countOp(orders, "snapshot")
	streamed := len(customers) + len(orders) - snap
	t.Logf("churn ran %d statements; %d snapshot records, %d streamed; job rows %d", ran, snap, streamed, jobs[0].Rows)
	if streamed == 0 {
		t.Error("no change was streamed while the snapshot ran")
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

// TestBackfillUnderUpdateStorm backfills entities on demand while a
// workload changes the same rows: the topics converge, which means no key
// is left with a stale state last, and the backfill reports its summary.
func TestBackfillUnderUpdateStorm(t *testing.T) {
	e := newEnv(t)
	e.cfg.Snapshot.ChunkSize = 17
	const n = 3000
	e.seed(n) // before the slot: only the backfill publishes these rows
	e.start()

	var out lockedBuffer
	ran := e.during(func() {
		ctx, cancel := context.WithTimeout(context.Background(), raceSlowdown*90*time.Second)
		defer cancel()
		err := Backfill(ctx, e.cfg, BackfillOptions{Entities: []string{"customer", "order"}, Reconcile: true, Interval: time.Second}, &out)
		if err != nil {
			t.Errorf("backfill: %v\n%s", err, out.String())
		}
	}, n)
	t.Logf("workload: %d statements during the backfill\n%s", ran, out.String())
	e.waitConverged()
	if !strings.Contains(out.String(), "requested backfill-") || !regexp.MustCompile(`backfill-\S+ done in \S+: \d+ rows published, \d+ tombstones`).MatchString(out.String()) {
		t.Errorf("bridge backfill output lacks the request or the summary:\n%s", out.String())
	}
	if ran == 0 {
		t.Error("the workload did not run during the backfill")
	}
}

// TestBackfillRefusesUnknownEntity checks the command's own validation.
func TestBackfillRefusesUnknownEntity(t *testing.T) {
	e := newEnv(t)
	var out bytes.Buffer
	err := Backfill(context.Background(), e.cfg, BackfillOptions{Entities: []string{"custmer"}}, &out)
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `did you mean "customer"?`) {
		t.Fatalf("err = %v, want a ConfigError suggesting customer", err)
	}
}

// TestTruncateTombstones truncates a mapped table: every key the topic
// held gets a tombstone, rows inserted after the TRUNCATE stay, and the
// bridge goes on streaming.
func TestTruncateTombstones(t *testing.T) {
	e, _ := snapshotted(t, 2500, func(c *Config) { c.Snapshot.ReconcileKeysPerPass = 1000 }) // several passes
	e.exec(`BEGIN; TRUNCATE legacy.ord_hdr; INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt) SELECT 9000001, min(cst_id), '2026-03-01', 7 FROM legacy.cust_mstr; COMMIT`)
	e.exec(`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt) SELECT 9000002, min(cst_id), '2026-03-01', 8 FROM legacy.cust_mstr`)
	jobs := e.waitJobs()
	e.waitConverged()

	var trunc *snapshot.Job
	for _, j := range jobs {
		if j.Reason == snapshot.Truncated {
			trunc = j
		}
	}
	if trunc == nil {
		t.Fatalf("no truncate job among %d jobs", len(jobs))
	}
	view := testenv.CompactedView(e.read("order"))
	if len(view) != 2 {
		t.Errorf("order topic holds %d live keys after the TRUNCATE, want the 2 inserted after it", len(view))
	}
	if trunc.Tombstones != 2500 || trunc.Topics[e.topic("order")].Passes < 2 {
		t.Errorf("truncate job: %d tombstones in %d passes, want 2500 in several", trunc.Tombstones, trunc.Topics[e.topic("order")].Passes)
	}
	if got := countOp(e.read("order"), "truncate"); got != 2500 {
		t.Errorf("%d records with ce_op truncate, want 2500", got)
	}
}

// snapshotted returns an env whose n seeded rows a running bridge has
// published through its initial snapshot; configure, if any, changes the
// configuration before the bridge starts.
func snapshotted(t *testing.T, n int, configure ...func(*Config)) (*env, *running) {
	t.Helper()
	e := newEnv(t)
	e.cfg.Snapshot.Mode = "initial"
	for _, f := range configure {
		f(e.cfg)
	}
	e.seed(n)
	r := e.start()
	e.waitJobs()
	e.waitConverged()
	return e, r
}

// TestLostSlot drops the slot of a bridge whose topics hold data: the next
// start refuses, naming the topics; with RecoverSlot it rebuilds the
// topics, tombstoning what was deleted while no slot existed.
func TestLostSlot(t *testing.T) {
	e, r := snapshotted(t, 500)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	e.dropSlot()
	// Changes no slot records.
	e.exec(`DELETE FROM legacy.ord_hdr WHERE ord_no <= 100`)
	e.exec(`UPDATE legacy.cust_mstr SET rec_stat = 'D' WHERE cst_cd <= 'S0000050'`)
	e.exec(`UPDATE legacy.cust_mstr SET cst_nm = 'renamed' WHERE cst_cd > 'S0000450'`)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := Run(context.Background(), e.cfg, log, RunOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "--recover-slot") || !strings.Contains(err.Error(), e.topic("order")) {
		t.Fatalf("start without a slot but with data: err = %v, want a ConfigError naming the topics and --recover-slot", err)
	}
	if e.queryString(`SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '`+e.db+`'`) != "0" {
		t.Error("the refused start created a slot")
	}

	e.startWith(RunOptions{RecoverSlot: true})
	jobs := e.waitJobs()
	e.waitConverged()
	last := jobs[len(jobs)-1]
	if last.Reason != snapshot.Recovered || last.Tombstones < 100+45 {
		t.Errorf("last job %s (%s) published %d tombstones, want a recover job with at least 145", last.ID, last.Reason, last.Tombstones)
	}
}

// TestBackfillIsGentle watches the source while a snapshot runs: no
// bridge transaction stays open longer than the chunk timeout, and the
// bridge holds no lock stronger than ACCESS SHARE.
func TestBackfillIsGentle(t *testing.T) {
	e := newEnv(t)
	e.cfg.Snapshot.Mode = "initial"
	e.cfg.Snapshot.ChunkSize = 500
	e.cfg.Snapshot.ChunkTimeout = 2 * time.Second
	e.seed(20000)
	e.exec(`ANALYZE legacy.ord_hdr`) // statistics: the table is split into ranges
	conn := e.conn()
	defer conn.Close(context.Background())
	e.start()

	var oldest time.Duration
	var samples, busy int
	var jobs []*snapshot.Job
	locks := map[string]int{}
	for {
		ctx := context.Background()
		var age *time.Duration
		var n int
		err := conn.QueryRow(ctx, `SELECT max(clock_timestamp() - xact_start), count(xact_start) FROM pg_stat_activity WHERE application_name = 'statefeed-backfill'`).Scan(&age, &n)
		if err != nil {
			t.Fatal(err)
		}
		samples++
		if age != nil {
			busy += n
			oldest = max(oldest, *age)
		}
		rows, err := conn.Query(ctx, `SELECT l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		        WHERE a.application_name = 'statefeed-backfill' AND l.locktype = 'relation'`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var mode string
			if err := rows.Scan(&mode); err != nil {
				t.Fatal(err)
			}
			locks[mode]++
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		jobs = e.jobs()
		if len(jobs) == 1 && jobs[0].State == snapshot.Done {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, tj := range jobs[0].Tables {
		if tj.Table == "legacy.ord_hdr" && len(tj.Ranges) < 2 {
			t.Errorf("legacy.ord_hdr was read in %d range, want it split for parallel reads", len(tj.Ranges))
		}
	}
	e.waitConverged()
	t.Logf("%d samples, %d with an open backfill transaction; oldest %s; relation locks %v", samples, busy, oldest, locks)
	if oldest >= e.cfg.Snapshot.ChunkTimeout {
		t.Errorf("a backfill transaction was open for %s, longer than the chunk timeout %s", oldest, e.cfg.Snapshot.ChunkTimeout)
	}
	for mode := range locks {
		if mode != "AccessShareLock" {
			t.Errorf("the backfill held a %s", mode)
		}
	}
	if busy == 0 {
		t.Error("no sample saw a backfill transaction: the check did not watch anything")
	}
}

// TestSnapshotTableKeys reads a table without a primary key through the
// unique index that is its replica identity, and refuses, with the fix, a
// table that has no such index.
func TestSnapshotTableKeys(t *testing.T) {
	e := newEnv(t)
	e.cfg.Snapshot.Mode = "initial"
	e.exec(`CREATE TABLE legacy.prod_cat (prd_cd varchar(12) NOT NULL, prd_nm text, price numeric(10,2));
	        CREATE UNIQUE INDEX prod_cat_cd ON legacy.prod_cat (prd_cd);
	        ALTER TABLE legacy.prod_cat REPLICA IDENTITY USING INDEX prod_cat_cd;
	        INSERT INTO legacy.prod_cat SELECT 'P-' || i, 'product ' || i, i FROM generate_series(1, 700) i;`)
	writeMapping(t, e, "product.yaml", `entity: product
topic: `+e.prefix+`product.v1
table: legacy.prod_cat
key: [prd_cd]
fields:
  code: prd_cd
  name: prd_nm
  price: price
`)
	e.cfg.Snapshot.ChunkSize = 64
	r := e.start()
	e.waitJobs()
	e.waitConverged()
	if n := countOp(e.read("product"), "snapshot"); n != 700 {
		t.Errorf("%d snapshot records, want 700", n)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	t.Run("no unique index", testSnapshotRefused)
}

// testSnapshotRefused maps a table with no unique index: it cannot be
// read in key order, and the bridge stops saying why and what to do.
func testSnapshotRefused(t *testing.T) {
	e2 := newEnv(t)
	e2.cfg.Snapshot.Mode = "initial"
	e2.exec(`CREATE TABLE legacy.audit_log (evt_cd text, msg text);
	         ALTER TABLE legacy.audit_log REPLICA IDENTITY FULL;
	         INSERT INTO legacy.audit_log VALUES ('E-1', 'x');`)
	writeMapping(t, e2, "audit.yaml", `entity: audit
topic: `+e2.prefix+`audit.v1
table: legacy.audit_log
key: [evt_cd]
fields:
  code: evt_cd
`)
	err, stopped := e2.start().wait(raceSlowdown * 60 * time.Second)
	if !stopped {
		t.Fatal("the bridge goes on with a snapshot it cannot take")
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Errorf("err = %v, want a ConfigError before anything is created", err)
	}
	for _, want := range []string{"legacy.audit_log", "no primary key", "REPLICA IDENTITY USING INDEX", "snapshot.mode: never"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}

// TestBackfillAfterNarrowedFilter narrows a mapping's filter and backfills
// the entity with reconcile: the entities now outside the filter get
// tombstones, and only those.
func TestBackfillAfterNarrowedFilter(t *testing.T) {
	e, r := snapshotted(t, 500)
	e.exec(`UPDATE legacy.cust_mstr SET rec_stat = 'I' WHERE cst_id % 7 = 3 AND rec_stat = 'A'`)
	e.waitConverged()
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	inactive := e.queryString(`SELECT count(*)::text FROM legacy.cust_mstr WHERE rec_stat = 'I'`)

	customer, err := os.ReadFile(filepath.Join(e.cfg.Mappings[0], "customer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	narrowed := strings.Replace(string(customer), "filter: rec_stat != 'D'", "filter: rec_stat == 'A'", 1)
	if narrowed == string(customer) {
		t.Fatal("the example customer mapping has no filter to narrow")
	}
	writeMapping(t, e, "customer.yaml", narrowed)
	e.start()
	var out bytes.Buffer
	if err := Backfill(context.Background(), e.cfg, BackfillOptions{Entities: []string{"customer"}, Reconcile: true}, &out); err != nil {
		t.Fatalf("backfill: %v\n%s", err, out.String())
	}
	e.waitConverged()
	jobs := e.jobs()
	last := jobs[len(jobs)-1]
	if fmt.Sprint(last.Tombstones) != inactive || inactive == "0" {
		t.Errorf("the reconcile published %d tombstones, want one per inactive customer (%s)", last.Tombstones, inactive)
	}
	t.Log(out.String())
}

// TestSlotLostWAL lets the slot of a stopped bridge lose WAL it needed
// (wal_status = lost, past max_slot_wal_keep_size): the next start
// refuses; with RecoverSlot it drops the slot, creates it again and
// rebuilds the topics.
func TestSlotLostWAL(t *testing.T) {
	e, r := snapshotted(t, 300)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	e.exec(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	e.exec(`SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		e.exec(`ALTER SYSTEM RESET max_slot_wal_keep_size`)
		e.exec(`SELECT pg_reload_conf()`)
	})
	e.exec(`DELETE FROM legacy.ord_hdr WHERE ord_no <= 50`) // a change the slot will lose
	status := `SELECT coalesce((SELECT wal_status FROM pg_replication_slots WHERE slot_name = '` + e.db + `'), 'missing')`
	err := testenv.Eventually(context.Background(), time.Minute, func(context.Context) (bool, string, error) {
		for range 3 {
			e.exec(`CREATE TEMP TABLE filler AS SELECT g FROM generate_series(1, 10000) g; DROP TABLE filler; SELECT pg_switch_wal()`)
		}
		e.exec(`CHECKPOINT`)
		s := e.queryString(status)
		return s == "lost", "wal_status " + s, nil
	})
	if err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err = Run(context.Background(), e.cfg, log, RunOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "wal_status = lost") || !strings.Contains(err.Error(), "--recover-slot") {
		t.Fatalf("start with a lost slot: err = %v, want a ConfigError saying so and naming --recover-slot", err)
	}
	e.startWith(RunOptions{RecoverSlot: true})
	jobs := e.waitJobs()
	e.waitConverged()
	if last := jobs[len(jobs)-1]; last.Reason != snapshot.Recovered || last.Tombstones < 50 {
		t.Errorf("last job %s (%s): %d tombstones, want a recover job with the 50 deleted orders among them", last.ID, last.Reason, last.Tombstones)
	}
	if s := e.queryString(status); s == "lost" || s == "missing" {
		t.Errorf("after recovery the slot is %s", s)
	}
}

// TestBackfillCancel cancels a running backfill: the job ends as
// cancelled, part way, and the bridge goes on streaming.
func TestBackfillCancel(t *testing.T) {
	e := newEnv(t)
	e.cfg.Snapshot.ChunkSize = 5
	e.cfg.Snapshot.Workers = 1
	e.seed(5000)
	e.start()
	var out bytes.Buffer
	if err := Backfill(context.Background(), e.cfg, BackfillOptions{Entities: []string{"order"}, NoWait: true}, &out); err != nil {
		t.Fatal(err)
	}
	var id string
	err := testenv.Eventually(context.Background(), time.Minute, func(context.Context) (bool, string, error) {
		for _, j := range e.jobs() {
			if id = j.ID; j.Rows > 100 {
				return true, "", nil
			}
		}
		return false, "the backfill has not started", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Backfill(context.Background(), e.cfg, BackfillOptions{Cancel: id}, &out); err != nil {
		t.Fatalf("cancel: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), id+" cancelled after") {
		t.Errorf("output lacks the cancel summary:\n%s", out.String())
	}
	j := e.jobs()[0]
	if !snapshot.Cancelled(j) || j.Rows >= 5000 {
		t.Errorf("job %s: state %s (%s), %d rows; want cancelled part way", j.ID, j.State, j.Error, j.Rows)
	}
	// The stream goes on.
	e.exec(`UPDATE legacy.ord_hdr SET stat_cd = 'XX' WHERE ord_no = 4999`)
	err = testenv.Eventually(context.Background(), 30*time.Second, func(context.Context) (bool, string, error) {
		v, _ := lastValue(e.read("order"), "4999")
		return strings.Contains(string(v), `"status":"XX"`), "order 4999 not updated in the topic", nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
