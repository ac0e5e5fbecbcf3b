package bridge

import (
	"strings"
	"testing"
	"time"
)

// bigMemo is an SQL expression for a text that PostgreSQL stores out of
// line (TOAST): an update that does not change it does not carry it.
const bigMemo = `(SELECT string_agg(md5(random()::text || g::text), '') FROM generate_series(1, 300) g)`

func seedOrders(e *env, n int) {
	e.t.Helper()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) VALUES ('R1', 'R')`)
	e.exec(`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt, ord_memo)
	        SELECT i, (SELECT cst_id FROM legacy.cust_mstr WHERE cst_cd = 'R1'), '2026-01-01', i, ` + bigMemo + `
	        FROM generate_series(1, ` + itoa(n) + `) i`)
}

func itoa(n int) string {
	b := []byte{}
	for ; n > 0 || len(b) == 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestSchemaChangeWhileStreaming adds a column to a mapped table and drops
// an unmapped one while the bridge streams; updates around them leave the
// TOASTed memo unchanged, so the bridge reads rows back across the changes.
func TestSchemaChangeWhileStreaming(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE legacy.ord_hdr ADD COLUMN junk int DEFAULT 7`)
	e.start()
	seedOrders(e, 20)
	e.waitConverged()

	e.exec(`ALTER TABLE legacy.ord_hdr ADD COLUMN extra text DEFAULT 'e'`)
	e.exec(`UPDATE legacy.ord_hdr SET stat_cd = 'A1' WHERE ord_no <= 10`)
	e.exec(`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt, extra) SELECT 100, cst_id, '2026-01-02', 1, 'x' FROM legacy.cust_mstr WHERE cst_cd = 'R1'`)
	e.exec(`ALTER TABLE legacy.ord_hdr DROP COLUMN junk`)
	e.exec(`UPDATE legacy.ord_hdr SET stat_cd = 'A2' WHERE ord_no > 10`)
	e.exec(`DELETE FROM legacy.ord_hdr WHERE ord_no = 3`)
	e.waitConverged()
}

// TestCatchUpOverDroppedColumn streams, after a restart, updates that were
// made before an unmapped column was dropped: the rows they read back
// must not name the dropped column.
func TestCatchUpOverDroppedColumn(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE legacy.ord_hdr ADD COLUMN junk int DEFAULT 7`)
	b := e.start()
	seedOrders(e, 20)
	e.waitConverged()
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}

	e.exec(`UPDATE legacy.ord_hdr SET stat_cd = 'B1' WHERE ord_no <= 10`) // memo unchanged: read back
	e.exec(`ALTER TABLE legacy.ord_hdr DROP COLUMN junk`)
	e.exec(`UPDATE legacy.ord_hdr SET stat_cd = 'B2' WHERE ord_no > 10`)

	b = e.start()
	e.waitConverged()
	if err, stopped := b.wait(0); stopped {
		t.Fatalf("bridge stopped: %v", err)
	}
}

// TestLargeTransaction streams transactions of 50,000 row changes each.
func TestLargeTransaction(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) VALUES ('L1', 'Large')`)
	e.exec(`INSERT INTO legacy.ord_hdr (ord_no, cst_id, ord_dt, ord_amt)
	        SELECT i, (SELECT cst_id FROM legacy.cust_mstr WHERE cst_cd = 'L1'), '2026-01-01', i FROM generate_series(1, 50000) i`)
	e.exec(`BEGIN;
	        UPDATE legacy.ord_hdr SET stat_cd = 'SH', tags = ARRAY['big', NULL];
	        DELETE FROM legacy.ord_hdr WHERE ord_no % 10 = 0;
	        COMMIT`)
	e.waitConverged()
}

// TestRenamedTableStops renames a mapped table while the bridge streams:
// its changes keep coming under the new name, and the bridge must stop
// rather than skip them as changes of an unmapped table.
func TestRenamedTableStops(t *testing.T) {
	e := newEnv(t)
	b := e.start()
	seedOrders(e, 2)
	e.waitConverged()
	e.exec(`ALTER TABLE legacy.ord_hdr RENAME TO ord_hdr_old`)
	e.exec(`UPDATE legacy.ord_hdr_old SET stat_cd = 'RN'`)
	err, stopped := b.wait(30 * time.Second)
	if !stopped || err == nil || !strings.Contains(err.Error(), "was renamed to legacy.ord_hdr_old") {
		t.Fatalf("bridge after a rename of a mapped table: stopped %v, %v; want an error naming the rename", stopped, err)
	}
}

// TestRenamedTableStopsOnFirstChange renames a mapped table whose changes
// the bridge has not seen since it started: the first change arrives under
// the new name only, and must still stop the bridge rather than pass as a
// change of an unmapped table.
func TestRenamedTableStopsOnFirstChange(t *testing.T) {
	e := newEnv(t)
	b := e.start()
	e.exec(`ALTER TABLE legacy.ord_hdr RENAME TO ord_hdr_old`)
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) VALUES ('RN1', 'x')`)
	e.exec(`INSERT INTO legacy.ord_hdr_old (ord_no, cst_id, ord_dt, ord_amt) SELECT 1, cst_id, '2026-01-01', 1 FROM legacy.cust_mstr`)
	err, stopped := b.wait(30 * time.Second)
	if !stopped || err == nil || !strings.Contains(err.Error(), "legacy.ord_hdr was renamed to legacy.ord_hdr_old") {
		t.Fatalf("bridge after a rename before any change: stopped %v, %v; want an error naming the rename", stopped, err)
	}
}
