package snapshot

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/internal/golden"
	"github.com/statefeed/statefeed/mapping"
)

func ptr(s string) *string { return &s }

func TestChunkQuery(t *testing.T) {
	one := &chunkReader{table: cdc.TableName{Schema: "legacy", Name: "ord_hdr"}, key: chunkKey{cols: []string{"ord_no"}, types: []string{"bigint"}}}
	two := &chunkReader{table: cdc.TableName{Schema: "Sales", Name: "line item"}, key: chunkKey{cols: []string{"ord_no", "Line"}, types: []string{"bigint", "character varying(8)"}}}
	tests := []struct {
		name  string
		cr    *chunkReader
		r     *Range
		after []string
	}{
		{"first chunk of a whole table", one, &Range{}, nil},
		{"next chunk", one, &Range{}, []string{"4096"}},
		{"first chunk of a middle range", one, &Range{From: ptr("1000"), To: ptr("2000")}, nil},
		{"next chunk of the last range", one, &Range{From: ptr("2000")}, []string{"2500"}},
		{"composite key, quoted names", two, &Range{To: ptr("7")}, []string{"3", "a'b"}},
	}
	var out strings.Builder
	for _, tt := range tests {
		sql, params := tt.cr.query(tt.r, tt.after, 100)
		fmt.Fprintf(&out, "== %s\n%s\n", tt.name, sql)
		for i, p := range params {
			fmt.Fprintf(&out, "  $%d = %q\n", i+1, p)
		}
	}
	golden.Check(t, "testdata/chunk_query.golden", out.String())
}

func TestIdentity(t *testing.T) {
	text := func(s string) cdc.Value { return cdc.Value{Kind: cdc.Text, Text: []byte(s)} }
	tests := []struct {
		row  []cdc.Value
		at   []int
		want string
		ok   bool
	}{
		{[]cdc.Value{text("42"), text("x")}, []int{0}, "2:42", true},
		// Lengths keep ("a:1","b") and ("a","1:b") apart.
		{[]cdc.Value{text("a:1"), text("b")}, []int{0, 1}, "3:a:11:b", true},
		{[]cdc.Value{text("a"), text("1:b")}, []int{0, 1}, "1:a3:1:b", true},
		{[]cdc.Value{text(""), text("")}, []int{1, 0}, "0:0:", true},
		{[]cdc.Value{{Kind: cdc.Unchanged}}, []int{0}, "", false},
		{[]cdc.Value{{Kind: cdc.Null}}, []int{0}, "", false},
		{[]cdc.Value{text("1")}, []int{3}, "", false},
	}
	for _, tt := range tests {
		got, ok := identity(tt.row, tt.at)
		if got != tt.want || ok != tt.ok {
			t.Errorf("identity(%v, %v) = %q, %v; want %q, %v", tt.row, tt.at, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBucketSpreadsKeys(t *testing.T) {
	const passes, keys = 4, 4000
	var count [passes]int
	for i := range keys {
		b := bucket(fmt.Appendf(nil, "C-%d", i), passes)
		if b != bucket(fmt.Appendf(nil, "C-%d", i), passes) {
			t.Fatal("bucket is not deterministic")
		}
		count[b]++
	}
	for p, n := range count {
		if n < keys/passes/2 || n > keys/passes*2 {
			t.Errorf("pass %d gets %d of %d keys: %v", p, n, keys, count)
		}
	}
	if bucket([]byte("x"), 1) != 0 || bucket([]byte("x"), 0) != 0 {
		t.Error("one pass must take every key")
	}
}

func TestProgress(t *testing.T) {
	j := &Job{Tables: []*TableJob{
		{Table: "a.t", Estimate: 1000, Planned: true, Ranges: []*Range{{Rows: 300}, {Rows: 200, Done: true}}},
		{Table: "a.u", Estimate: 0, Planned: true, Ranges: []*Range{{Rows: 50, Done: true}}},
		{Table: "a.v", Estimate: 10},
	}}
	got := Progress(j, 10*time.Second, map[string]int64{"a.t": 100})
	want := []TableProgress{
		{Table: "a.t", Rows: 500, Estimate: 1000, Rate: 40, ETA: 13 * time.Second},
		{Table: "a.u", Rows: 50, Rate: 5, Done: true},
		{Table: "a.v", Estimate: 10},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Progress =\n%v\nwant\n%v", got, want)
	}
}

// stream drives a Coordinator's stream side by hand: the marks and
// changes the pipeline would hand it, in stream order.
type stream struct {
	t  *testing.T
	c  *Coordinator
	tx *cdc.Tx
}

func (w *stream) mark(kind string, id uint64) []Record {
	w.t.Helper()
	b, _ := json.Marshal(mark{Slot: "s", Kind: kind, Run: w.c.run, Window: id})
	ch := &cdc.Change{Op: cdc.Message, Tx: w.tx, Prefix: Prefix, Content: b}
	if !Ours(ch) {
		w.t.Fatal("a watermark is not ours")
	}
	recs, err := w.c.Mark(context.Background(), ch, func(context.Context) error { return nil })
	if err != nil {
		w.t.Fatal(err)
	}
	return recs
}

var custRel = &cdc.Relation{ID: 1, Table: cdc.TableName{Schema: "public", Name: "cust"},
	Columns: []cdc.Column{{Name: "id", TypeOID: 23}, {Name: "code", TypeOID: 25}}}

func row(id, code string) []cdc.Value {
	return []cdc.Value{{Kind: cdc.Text, Text: []byte(id)}, {Kind: cdc.Text, Text: []byte(code)}}
}

// TestWindowDropsChangedRows walks a chunk through its watermarks: rows
// the stream changed between them are dropped, changes before the low
// watermark or after the high one are not noted, and a TRUNCATE in the
// window makes the chunk read again.
func TestWindowDropsChangedRows(t *testing.T) {
	m := &mapping.Mapping{Entity: "customer", Topic: "crm.customer", Table: custRel.Table}
	it := func(id string) item {
		return item{id: fmt.Appendf(nil, "%d:%s", len(id), id), recs: []itemRecord{{m: m, key: []byte("K" + id), value: []byte("{}")}}}
	}
	c := New(Options{Slot: "s"})
	w := &stream{t: t, c: c, tx: &cdc.Tx{CommitLSN: pglogrepl.LSN(100)}}

	ch := c.newWindow(custRel.Table, "", []string{"id"})
	c.Observe(&cdc.Change{Op: cdc.Update, Relation: custRel, New: row("1", "a")}) // before the low watermark
	if recs := w.mark(kindLow, ch.id); recs != nil {
		t.Fatalf("low watermark published %d records", len(recs))
	}
	c.Observe(&cdc.Change{Op: cdc.Update, Relation: custRel, New: row("2", "b")})
	c.Observe(&cdc.Change{Op: cdc.Update, Relation: custRel, Old: row("3", "c"), New: row("30", "c")}) // key change
	c.Observe(&cdc.Change{Op: cdc.Delete, Relation: custRel, Old: row("4", "d")})
	c.Observe(&cdc.Change{Op: cdc.Insert, Relation: &cdc.Relation{Table: cdc.TableName{Schema: "public", Name: "other"}, Columns: custRel.Columns}, New: row("5", "e")})
	ch.items, ch.ready = []item{it("1"), it("2"), it("3"), it("4"), it("5"), it("30")}, true
	recs := w.mark(kindHigh, ch.id)
	var keys []string
	for _, r := range recs {
		keys = append(keys, string(r.Key))
		if r.Op != "snapshot" || r.Topic != "crm.customer" || r.Entity != "customer" {
			t.Errorf("record %+v", r)
		}
		r.Done(nil)
	}
	if got := strings.Join(keys, ","); got != "K1,K5" {
		t.Errorf("published %s, want K1,K5 (2, 3, 30 and 4 changed inside the window)", got)
	}
	res := <-ch.result
	if res.again || res.published != 2 || res.dropped != 4 || <-res.acked != nil {
		t.Errorf("result %+v", res)
	}
	c.Observe(&cdc.Change{Op: cdc.Update, Relation: custRel, New: row("1", "a")}) // after: no window open
	if c.open.Load() != 0 {
		t.Errorf("%d windows still open", c.open.Load())
	}

	// A TRUNCATE inside the window: read the chunk again.
	tr := c.newWindow(custRel.Table, "", []string{"id"})
	w.mark(kindLow, tr.id)
	c.Observe(&cdc.Change{Op: cdc.Truncate, Truncated: []*cdc.Relation{custRel}})
	tr.items, tr.ready = []item{it("1")}, true
	if recs := w.mark(kindHigh, tr.id); recs != nil {
		t.Errorf("a truncated window published %d records", len(recs))
	}
	if res := <-tr.result; !res.again {
		t.Error("a truncated window must read its chunk again")
	}

	// A watermark of another run, or for another slot, is not ours to act on.
	b, _ := json.Marshal(mark{Slot: "s", Kind: kindHigh, Run: "earlier", Window: 1})
	if recs, err := c.Mark(context.Background(), &cdc.Change{Op: cdc.Message, Tx: w.tx, Prefix: Prefix, Content: b}, nil); recs != nil || err != nil {
		t.Errorf("stale watermark: %v, %v", recs, err)
	}
}

// TestReconcileWindowSparesKeysWritten checks that a reconcile pass does
// not tombstone a key the stream published inside its window.
func TestReconcileWindowSparesKeysWritten(t *testing.T) {
	c := New(Options{Slot: "s"})
	w := &stream{t: t, c: c, tx: &cdc.Tx{CommitLSN: 200}}
	p := c.newWindow(cdc.TableName{}, "crm.customer", nil)
	p.tomb = tombInfo{entity: "customer", table: custRel.Table, op: "reconcile"}
	c.Published("crm.customer", []byte("A")) // before the window
	w.mark(kindLow, p.id)
	c.Published("crm.customer", []byte("B"))
	c.Published("other.topic", []byte("C"))
	p.tombs, p.ready = [][]byte{[]byte("A"), []byte("B"), []byte("C")}, true
	recs := w.mark(kindHigh, p.id)
	var keys []string
	for _, r := range recs {
		if r.Value != nil || r.Op != "reconcile" {
			t.Errorf("record %+v is not a reconcile tombstone", r)
		}
		keys = append(keys, string(r.Key))
	}
	if got := strings.Join(keys, ","); got != "A,C" {
		t.Errorf("tombstones for %s, want A,C", got)
	}
}

// TestBlocks checks that copies handed out by blocks keep their bytes
// until reset, across block boundaries, and that reset reuses the space.
func TestBlocks(t *testing.T) {
	var b blocks
	var got [][]byte
	var want []string
	for i := range 3000 {
		v := strings.Repeat(fmt.Sprint(i%10), 1+i%500)
		if i == 1500 {
			v = strings.Repeat("x", arenaBlock+10) // larger than a block
		}
		got = append(got, b.add([]byte(v)))
		want = append(want, v)
	}
	for i := range got {
		if string(got[i]) != want[i] {
			t.Fatalf("copy %d changed: %.20q..., want %.20q...", i, got[i], want[i])
		}
	}
	blocksBefore := len(b.list)
	b.reset()
	for i := range 3000 {
		b.add([]byte(want[i]))
	}
	if len(b.list) != blocksBefore {
		t.Errorf("after reset the same data took %d blocks, before %d: the space was not reused", len(b.list), blocksBefore)
	}
}
