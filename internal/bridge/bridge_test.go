package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/testenv"
)

func lastValue(msgs []testenv.Message, key string) (value []byte, found bool) {
	for _, m := range msgs {
		if string(m.Key) == key {
			value, found = m.Value, true
		}
	}
	return value, found
}

// TestStream covers the projection rules end to end: inserts, updates, a
// key change, a soft delete, a hard delete, one transaction touching two
// entities and an update that leaves a 1 MB TOASTed column unchanged.
func TestStream(t *testing.T) {
	e := newEnv(t)
	e.start()

	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm, eml_addr, cty_nm, ctry_cd, crd_lmt, rec_stat) VALUES
	        ('C002', 'Grace Hopper', 'grace@example.org', 'Arlington', 'US', 900, 'A'),
	        ('C003', 'Alan Turing', NULL, 'Wilmslow', 'GB', 0, 'I'),
	        ('C004', 'Edsger Dijkstra', 'ewd@example.org', 'Austin', 'US', 10, 'A')`)
	// One transaction touching two entities.
	e.exec(`BEGIN;
	        INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt, stat_cd, itm_cnt, tags, ord_memo)
	          SELECT 5001, cst_id, '2026-01-15', 129.90, 'OP', 3, ARRAY['rush','gift'], repeat('x', 1048576) FROM legacy.cust_mstr WHERE cst_cd = 'C002';
	        UPDATE legacy.cust_mstr SET crd_lmt = 1000.00, upd_ts = '2026-01-15 10:00:00+01' WHERE cst_cd = 'C002';
	        COMMIT`)
	e.exec(`UPDATE legacy.cust_mstr SET cst_cd = 'C004X' WHERE cst_cd = 'C004'`) // key change
	e.exec(`UPDATE legacy.cust_mstr SET rec_stat = 'D' WHERE cst_cd = 'C003'`)   // soft delete
	e.exec(`UPDATE legacy.ord_hdr SET stat_cd = 'SH' WHERE ord_no = 5001`)       // leaves the 1 MB memo unchanged (TOAST)
	e.exec(`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt) SELECT 5002, cst_id, '2026-01-16', 5 FROM legacy.cust_mstr WHERE cst_cd = 'C002'`)
	e.exec(`DELETE FROM legacy.ord_hdr WHERE ord_no = 5002`)
	e.waitConverged()

	customers := e.read("customer")
	if v, ok := lastValue(customers, "C004"); !ok || v != nil {
		t.Errorf("old key C004 after key change: last value %q (found %v), want a tombstone", v, ok)
	}
	if v, ok := lastValue(customers, "C003"); !ok || v != nil {
		t.Errorf("soft-deleted C003: last value %q (found %v), want a tombstone", v, ok)
	}
	var c2 map[string]any
	v, _ := lastValue(customers, "C002")
	if err := json.Unmarshal(v, &c2); err != nil {
		t.Fatalf("C002 value %q: %v", v, err)
	}
	if c2["credit_limit"] != "1000.00" || c2["updated_at"] != "2026-01-15T09:00:00Z" {
		t.Errorf("C002 = %s, want credit_limit \"1000.00\" and updated_at in UTC", v)
	}

	orders := e.read("order")
	if v, ok := lastValue(orders, "5002"); !ok || v != nil {
		t.Errorf("deleted order 5002: last value %q (found %v), want a tombstone", v, ok)
	}
	v, _ = lastValue(orders, "5001")
	var o map[string]any
	if err := json.Unmarshal(v, &o); err != nil {
		t.Fatalf("order 5001 value: %v", err)
	}
	if o["status"] != "SH" || len(o["memo"].(string)) != 1048576 {
		t.Errorf("order 5001 after a TOAST-unchanged update: status %v, memo of %d bytes; want SH and the full 1 MB memo", o["status"], len(o["memo"].(string)))
	}
	// The two records of the two-entity transaction share its commit LSN.
	var lsnOrder, lsnCust string
	for _, m := range orders {
		if string(m.Key) == "5001" && m.Headers["ce_op"] == "insert" {
			lsnOrder = m.Headers["ce_lsn"]
		}
	}
	for _, m := range customers {
		if string(m.Key) == "C002" && m.Headers["ce_op"] == "update" {
			lsnCust = m.Headers["ce_lsn"]
		}
	}
	if lsnOrder == "" || lsnOrder != lsnCust {
		t.Errorf("ce_lsn of the two-entity transaction: order %q, customer %q; want the same commit LSN", lsnOrder, lsnCust)
	}
	for _, m := range append(customers, orders...) {
		for _, h := range []string{"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "content-type", "ce_lsn", "ce_xid", "ce_table", "ce_op"} {
			if m.Headers[h] == "" {
				t.Fatalf("record %s@%d (tombstone %v) lacks header %s: %v", m.Key, m.Offset, m.Tombstone, h, m.Headers)
			}
		}
	}
}

// TestRestartResumes stops the bridge gracefully, changes the source while
// it is down, and checks that a restart publishes exactly what it missed:
// the slot was confirmed at the stop, so nothing is published twice.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	b := e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'K' || i, 'n' || i FROM generate_series(1, 200) i`)
	e.waitConverged()
	if err := b.stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	before := len(e.read("customer"))
	confirmed := e.confirmedLSN()
	current := e.queryString(`SELECT pg_current_wal_insert_lsn()::text`)
	t.Logf("after stop: %d records, slot confirmed at %s, WAL at %s", before, confirmed, current)

	e.exec(`UPDATE legacy.cust_mstr SET cst_nm = 'renamed ' || cst_cd WHERE cst_id % 2 = 0`)
	e.exec(`DELETE FROM legacy.cust_mstr WHERE cst_id % 10 = 1`)
	e.start()
	e.waitConverged()
	after := len(e.read("customer"))
	if want := before + 100 + 20; after != want {
		t.Errorf("records after restart = %d, want %d (%d before + 100 updates + 20 deletes): the restart republished or lost changes", after, want, before)
	}
}

// TestTruncateStops checks that a TRUNCATE of a table whose mapping says
// on_truncate: fail stops the bridge with an explanation, without
// confirming past it.
func TestTruncateStops(t *testing.T) {
	e := newEnv(t)
	order, err := os.ReadFile(filepath.Join(e.cfg.Mappings[0], "order.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeMapping(t, e, "order.yaml", strings.Replace(string(order), "fields:", "on_truncate: fail\nfields:", 1))
	b := e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) VALUES ('T1', 'x')`)
	e.waitConverged()
	before := e.queryString(`SELECT pg_current_wal_insert_lsn()::text`)
	e.exec(`TRUNCATE legacy.ord_hdr`)
	err, stopped := b.wait(60 * time.Second)
	if !stopped {
		t.Fatal("bridge still running after TRUNCATE")
	}
	var te *mapping.TruncateError
	if !errors.As(err, &te) {
		t.Fatalf("Run = %v, want a *mapping.TruncateError", err)
	}
	for _, want := range []string{"legacy.ord_hdr", "on_truncate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	confirmed := e.confirmedLSN()
	if lsnGreater(t, confirmed, before) {
		t.Errorf("slot confirmed at %s, past the TRUNCATE (WAL was at %s before it)", confirmed, before)
	}
	// A restart meets the TRUNCATE again: it was not skipped.
	err, stopped = e.start().wait(60 * time.Second)
	if !stopped || !errors.As(err, &te) {
		t.Errorf("restart after TRUNCATE: stopped %v with %v, want the same TruncateError", stopped, err)
	}
}

// TestExpressionErrorStops checks the error for an expression that fails
// on a row: it names the mapping file, the field and the primary key, not
// the row's values, and the slot does not pass the change.
func TestExpressionErrorStops(t *testing.T) {
	e := newEnv(t)
	// A mapping whose expression fails at run time on non-numeric codes.
	writeMapping(t, e, "customer.yaml", `entity: customer
topic: `+e.prefix+`crm.customer.v1
table: legacy.cust_mstr
key: [cst_cd]
fields:
  code: cst_cd
  number: int(trim(cst_cd))
`)
	b := e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm, eml_addr) VALUES ('123', 'ok', 'x@example.org')`)
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm, eml_addr) VALUES ('ABC', 'secret name', 'secret@example.org')`)
	err, stopped := b.wait(60 * time.Second)
	if !stopped {
		t.Fatal("bridge still running after a failing expression")
	}
	msg := err.Error()
	for _, want := range []string{"customer.yaml", "number", "cst_id"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	for _, secret := range []string{"secret name", "secret@example.org"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error %q leaks a row value %q", msg, secret)
		}
	}
	if n := len(e.read("customer")); n != 1 {
		t.Errorf("%d records published, want 1 (the row before the failing one)", n)
	}
}

// TestKafkaOutage cuts every connection to the broker and refuses new ones
// while changes keep coming, then lets the broker back: nothing is lost.
func TestKafkaOutage(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'P' || i, 'n' || i FROM generate_series(1, 50) i`)
	e.waitConverged()
	resume := pauseKafka(t)
	for i := range 5 {
		e.exec(`UPDATE legacy.cust_mstr SET crd_lmt = crd_lmt + 1 WHERE cst_id % 5 = $1`, i)
	}
	e.exec(`DELETE FROM legacy.cust_mstr WHERE cst_id % 7 = 0`)
	// Wait until the bridge has received all of it while Kafka is away.
	walEnd := e.waitSent()
	confirmed := e.confirmedLSN()
	if lsnGreater(t, confirmed, walEnd) || confirmed == walEnd {
		t.Errorf("slot confirmed at %s while Kafka was unreachable; the changes end at %s", confirmed, walEnd)
	}
	resume()
	e.waitConverged()
}

// TestPostgresConnectionLost restarts PostgreSQL under a streaming bridge:
// it reconnects and resumes from the slot.
func TestPostgresConnectionLost(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'R' || i, 'n' || i FROM generate_series(1, 50) i`)
	e.waitConverged()
	ctx := context.Background()
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.exec(`UPDATE legacy.cust_mstr SET cst_nm = upper(cst_nm)`)
	e.exec(`DELETE FROM legacy.cust_mstr WHERE cst_id % 3 = 0`)
	e.waitConverged()
}

// TestStopWhileKafkaDown stops the bridge while Kafka is unreachable: the
// stop takes no longer than shutdown_timeout, reports what it could not
// flush, confirms nothing unacknowledged, and a later start delivers it.
func TestStopWhileKafkaDown(t *testing.T) {
	e := newEnv(t)
	e.cfg.ShutdownTimeout = 2 * time.Second
	b := e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'S' || i, 'n' || i FROM generate_series(1, 20) i`)
	e.waitConverged()
	resume := pauseKafka(t)
	e.exec(`UPDATE legacy.cust_mstr SET cst_nm = 'while down'`)
	walEnd := e.waitSent()

	began := time.Now()
	err := b.stop()
	took := time.Since(began)
	if err == nil || !strings.Contains(err.Error(), "did not acknowledge") {
		t.Errorf("stop while Kafka is down = %v, want an error saying Kafka did not acknowledge", err)
	}
	if took > 15*time.Second {
		t.Errorf("stop took %s with shutdown_timeout %s", took, e.cfg.ShutdownTimeout)
	}
	confirmed := e.confirmedLSN()
	if lsnGreater(t, confirmed, walEnd) || confirmed == walEnd {
		t.Errorf("slot confirmed at %s, past the unacknowledged update (WAL at %s)", confirmed, walEnd)
	}

	resume()
	e.start()
	e.waitConverged()
}

// TestPostgresRestartWhileKafkaDown restarts PostgreSQL while Kafka is
// unreachable. Reconnecting waits for Kafka as long as it takes (the
// shutdown timeout applies only to a stop), and then everything converges.
func TestPostgresRestartWhileKafkaDown(t *testing.T) {
	e := newEnv(t)
	e.cfg.ShutdownTimeout = time.Second
	b := e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'Q' || i, 'n' || i FROM generate_series(1, 20) i`)
	e.waitConverged()
	resume := pauseKafka(t)
	e.exec(`UPDATE legacy.cust_mstr SET crd_lmt = 7`)
	ctx := context.Background()
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.exec(`DELETE FROM legacy.cust_mstr WHERE cst_id % 4 = 0`)
	if err, stopped := b.wait(3 * time.Second); stopped {
		t.Fatalf("bridge stopped while Kafka was down: %v", err)
	}
	resume()
	e.waitConverged()
}

// TestPostgresConnectionCut cuts the bridge's connections to PostgreSQL
// (replication and row reads) several times in the middle of a stream of
// changes; the bridge reconnects and converges.
func TestPostgresConnectionCut(t *testing.T) {
	e := newEnv(t)
	proxy := testenv.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port()))
	cfg := *e.cfg
	cfg.Source.DSN = strings.Replace(e.dsn, fmt.Sprintf("127.0.0.1:%d", pg.Port()), proxy.Addr(), 1)
	e.cfg = &cfg
	e.start()
	for i := range 5 {
		e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'X' || $1::int || '-' || g, 'n' FROM generate_series(1, 30) g`, i)
		e.exec(`UPDATE legacy.ord_hdr SET stat_cd = 'CT'`)
		e.exec(`UPDATE legacy.cust_mstr SET crd_lmt = crd_lmt + 1 WHERE cst_id % 3 = $1`, i%3)
		// Cut while the changes are on their way, then let the bridge
		// reconnect and deliver them before the next round.
		proxy.CutAll()
		e.waitConverged()
	}
	e.exec(`DELETE FROM legacy.cust_mstr WHERE cst_id % 5 = 0`)
	e.waitConverged()
}

// TestProgressLogged checks the periodic progress line: it appears while
// records flow and counts them.
func TestProgressLogged(t *testing.T) {
	e := newEnv(t)
	e.cfg.Log.ProgressInterval = 100 * time.Millisecond
	e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'G' || i, 'n' FROM generate_series(1, 25) i`)
	e.waitConverged()
	// The 25 records may be counted over more than one interval.
	progress := regexp.MustCompile(`msg=progress records=(\d+) transactions=\d+ lsn=\S+`)
	err := testenv.Eventually(context.Background(), 10*time.Second, func(context.Context) (bool, string, error) {
		sum := 0
		for _, m := range progress.FindAllStringSubmatch(e.logs.String(), -1) {
			n, _ := strconv.Atoi(m[1])
			sum += n
		}
		return sum == 25, fmt.Sprintf("progress lines count %d records, want 25", sum), nil
	})
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, e.logs)
	}
}

// TestBrokerRestart restarts the Kafka broker (its log persists) under a
// streaming bridge: the producer reconnects and nothing is lost.
func TestBrokerRestart(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'B' || i, 'n' FROM generate_series(1, 40) i`)
	e.waitConverged()
	if err := broker.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.exec(`UPDATE legacy.cust_mstr SET cst_nm = 'after restart' WHERE cst_id % 2 = 0`)
	e.exec(`DELETE FROM legacy.cust_mstr WHERE cst_id % 5 = 0`)
	e.waitConverged()
}
