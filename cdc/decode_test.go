package cdc

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statefeed/statefeed/internal/golden"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
)

// msg builds pgoutput messages byte by byte.
type msg []byte

func m(kind byte) msg { return msg{kind} }

func (b msg) u8(v byte) msg    { return append(b, v) }
func (b msg) u16(v int) msg    { return binary.BigEndian.AppendUint16(b, uint16(v)) }
func (b msg) u32(v uint32) msg { return binary.BigEndian.AppendUint32(b, v) }
func (b msg) u64(v uint64) msg { return binary.BigEndian.AppendUint64(b, v) }
func (b msg) str(s string) msg { return append(append(b, s...), 0) }

// tuple appends a TupleData: "NULL" → 'n', "TOAST" → 'u', anything else → 't'.
func (b msg) tuple(vals ...string) msg {
	b = b.u16(len(vals))
	for _, v := range vals {
		switch v {
		case "NULL":
			b = b.u8('n')
		case "TOAST":
			b = b.u8('u')
		default:
			b = b.u8('t').u32(uint32(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

type col struct {
	name  string
	oid   uint32
	mod   int32
	ident bool
}

func relationMsg(id uint32, schema, name string, ident byte, cols ...col) msg {
	b := m('R').u32(id).str(schema).str(name).u8(ident).u16(len(cols))
	for _, c := range cols {
		var flags byte
		if c.ident {
			flags = 1
		}
		b = b.u8(flags).str(c.name).u32(c.oid).u32(uint32(c.mod))
	}
	return b
}

var commitTime = time.Date(2024, 5, 1, 12, 30, 0, 123456000, time.UTC)

func pgMicros(t time.Time) uint64 { return uint64(t.UnixMicro() - postgresEpoch) }

func beginMsg(final pglogrepl.LSN, xid uint32) msg {
	return m('B').u64(uint64(final)).u64(pgMicros(commitTime)).u32(xid)
}

func commitMsg(commit, end pglogrepl.LSN) msg {
	return m('C').u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgMicros(commitTime))
}

var (
	customers = relationMsg(16384, "public", "customers", 'd',
		col{"id", 23, -1, true}, col{"name", 25, -1, false}, col{"bio", 25, -1, false})
	customersRel = &Relation{
		ID: 16384, Table: TableName{"public", "customers"}, ReplicaIdentity: 'd',
		Columns: []Column{{"id", 23, -1, true}, {"name", 25, -1, false}, {"bio", 25, -1, false}},
	}
	orders = relationMsg(16390, "sales", "orders", 'f',
		col{"no", 1043, 24, true}, col{"total", 1700, 655366, true})
	ordersRel = &Relation{
		ID: 16390, Table: TableName{"sales", "orders"}, ReplicaIdentity: 'f',
		Columns: []Column{{"no", 1043, 24, true}, {"total", 1700, 655366, true}},
	}
)

func text(s string) Value { return Value{Kind: Text, Text: []byte(s)} }

var (
	null      = Value{Kind: Null}
	unchanged = Value{Kind: Unchanged}
	absent    = Value{}
)

func TestDecode(t *testing.T) {
	tx := &Tx{XID: 731, CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: commitTime}
	txOpen := &Tx{XID: 731, CommitLSN: 0x16B3748, CommitTime: commitTime}
	tests := []struct {
		name string
		msgs []msg // decoded after the relation messages and Begin
		want []Change
	}{{
		name: "insert with null and empty text",
		msgs: []msg{m('I').u32(16384).u8('N').tuple("1", "NULL", "")},
		want: []Change{{Op: Insert, Tx: txOpen, Relation: customersRel,
			New: []Value{text("1"), null, text("")}}},
	}, {
		name: "update without old tuple keeps unchanged TOAST",
		msgs: []msg{m('U').u32(16384).u8('N').tuple("1", "Ann", "TOAST")},
		want: []Change{{Op: Update, Tx: txOpen, Relation: customersRel,
			New: []Value{text("1"), text("Ann"), unchanged}}},
	}, {
		name: "update with key tuple marks non-identity columns absent",
		msgs: []msg{m('U').u32(16384).u8('K').tuple("1", "NULL", "NULL").u8('N').tuple("2", "Ann", "TOAST")},
		want: []Change{{Op: Update, Tx: txOpen, Relation: customersRel,
			Old: []Value{text("1"), absent, absent},
			New: []Value{text("2"), text("Ann"), unchanged}}},
	}, {
		name: "update with full old tuple",
		msgs: []msg{m('U').u32(16390).u8('O').tuple("A-1", "NULL").u8('N').tuple("A-1", "9.50")},
		want: []Change{{Op: Update, Tx: txOpen, Relation: ordersRel,
			Old: []Value{text("A-1"), null},
			New: []Value{text("A-1"), text("9.50")}}},
	}, {
		name: "delete with key tuple",
		msgs: []msg{m('D').u32(16384).u8('K').tuple("7", "NULL", "NULL")},
		want: []Change{{Op: Delete, Tx: txOpen, Relation: customersRel,
			Old: []Value{text("7"), absent, absent}}},
	}, {
		name: "delete with full old tuple",
		msgs: []msg{m('D').u32(16390).u8('O').tuple("A-1", "9.50")},
		want: []Change{{Op: Delete, Tx: txOpen, Relation: ordersRel,
			Old: []Value{text("A-1"), text("9.50")}}},
	}, {
		name: "truncate with cascade and restart identity",
		msgs: []msg{m('T').u32(2).u8(1 | 2).u32(16390).u32(16384)},
		want: []Change{{Op: Truncate, Tx: txOpen, Truncated: []*Relation{ordersRel, customersRel}}},
	}, {
		name: "truncate without options",
		msgs: []msg{m('T').u32(1).u8(0).u32(16384)},
		want: []Change{{Op: Truncate, Tx: txOpen, Truncated: []*Relation{customersRel}}},
	}, {
		name: "origin and type produce no change",
		msgs: []msg{
			m('O').u64(0x100).str("upstream"),
			m('Y').u32(16400).str("public").str("mood"),
			m('I').u32(16384).u8('N').tuple("1", "x", "y"),
		},
		want: []Change{{Op: Insert, Tx: txOpen, Relation: customersRel,
			New: []Value{text("1"), text("x"), text("y")}}},
	}, {
		name: "transactional logical message is numbered like a row change",
		msgs: []msg{
			m('M').u8(1).u64(0x16B3700).str("prefix").u32(2).u8('h').u8('i'),
			m('I').u32(16384).u8('N').tuple("1", "x", "y"),
		},
		want: []Change{
			{Op: Message, Tx: txOpen, Prefix: "prefix", Content: []byte("hi")},
			{Op: Insert, Tx: txOpen, Seq: 1, Relation: customersRel, New: []Value{text("1"), text("x"), text("y")}},
		},
	}, {
		name: "non-transactional logical message has no transaction",
		msgs: []msg{m('M').u8(0).u64(0x16B3700).str("p").u32(1).u8('x')},
		want: []Change{{Op: Message, Prefix: "p", Content: []byte("x")}},
	}, {
		name: "sequence numbers and commit",
		msgs: []msg{
			m('I').u32(16384).u8('N').tuple("1", "a", "b"),
			m('D').u32(16384).u8('K').tuple("1", "NULL", "NULL"),
			commitMsg(0x16B3748, 0x16B3778),
		},
		want: []Change{
			{Op: Insert, Tx: tx, Seq: 0, Relation: customersRel, New: []Value{text("1"), text("a"), text("b")}},
			{Op: Delete, Tx: tx, Seq: 1, Relation: customersRel, Old: []Value{text("1"), absent, absent}},
			{Op: Commit, Tx: tx, Seq: 2},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder()
			for _, b := range []msg{customers, orders} {
				if _, ok, err := d.Decode(0, b); err != nil || ok {
					t.Fatalf("relation: ok=%v err=%v", ok, err)
				}
			}
			begin, ok, err := d.Decode(0x16B3700, beginMsg(0x16B3748, 731))
			if err != nil || !ok {
				t.Fatalf("begin: ok=%v err=%v", ok, err)
			}
			if diff := cmp.Diff(Change{Op: Begin, Tx: txOpen}, begin); diff != "" {
				t.Errorf("begin (-want +got):\n%s", diff)
			}
			var got []Change
			for _, b := range tt.msgs {
				c, ok, err := d.Decode(0x16B3700, b)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					got = append(got, c)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeTypeAndRelationCache(t *testing.T) {
	d := NewDecoder()
	mustDecode(t, d, m('Y').u32(16400).str("public").str("mood"))
	if name, ok := d.TypeName(16400); !ok || name != "public.mood" {
		t.Errorf("TypeName(16400) = %q, %v; want public.mood, true", name, ok)
	}
	if _, ok := d.TypeName(25); ok {
		t.Error("TypeName(25) found a type that was never announced")
	}

	mustDecode(t, d, customers)
	first, _ := d.Relation(16384)
	mustDecode(t, d, customers)
	if again, _ := d.Relation(16384); again != first {
		t.Error("an unchanged relation announcement replaced the *Relation")
	}

	mustDecode(t, d, beginMsg(0x200, 9))
	before := mustDecode(t, d, m('I').u32(16384).u8('N').tuple("1", "a", "b"))
	altered := relationMsg(16384, "public", "customers", 'd',
		col{"id", 23, -1, true}, col{"name", 25, -1, false}, col{"bio", 25, -1, false}, col{"email", 25, -1, false})
	mustDecode(t, d, altered)
	after := mustDecode(t, d, m('I').u32(16384).u8('N').tuple("2", "a", "b", "c"))
	if after.Relation == before.Relation {
		t.Fatal("a changed relation announcement kept the old *Relation")
	}
	if diff := cmp.Diff(customersRel, before.Relation); diff != "" {
		t.Errorf("the old *Relation changed (-want +got):\n%s", diff)
	}
	if got := len(after.Relation.Columns); got != 4 {
		t.Errorf("new relation has %d columns, want 4", got)
	}
	if after.Seq != 1 {
		t.Errorf("Seq = %d, want 1", after.Seq)
	}
}

func mustDecode(t *testing.T, d *Decoder, b msg) Change {
	t.Helper()
	c, _, err := d.Decode(0, b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		before []msg
		msg    msg
		want   string
	}{
		{"empty", nil, msg{}, "empty message"},
		{"unknown type", nil, m('S').u32(1), `unknown message type 'S'`},
		{"short begin", nil, m('B').u64(1), "truncated"},
		{"trailing bytes", nil, beginMsg(1, 1).u8(0), "1 trailing bytes"},
		{"begin inside transaction", []msg{beginMsg(1, 1)}, beginMsg(2, 2), "transaction 2 begins before transaction 1 committed"},
		{"commit without begin", nil, commitMsg(1, 2), "commit without a transaction"},
		{"commit lsn mismatch", []msg{beginMsg(0x20, 5)}, commitMsg(0x21, 0x30), "commit LSN 0/21 does not match the final LSN 0/20"},
		{"end before commit", []msg{beginMsg(0x20, 5)}, commitMsg(0x20, 0x10), "ends at 0/10, before its commit LSN 0/20"},
		{"insert outside transaction", []msg{customers}, m('I').u32(16384).u8('N').tuple("1", "a", "b"), "insert outside a transaction"},
		{"unknown relation", []msg{beginMsg(1, 1)}, m('I').u32(99).u8('N').tuple("1"), "insert for relation 99 that was never announced"},
		{"truncate unknown relation", []msg{customers, beginMsg(1, 1)}, m('T').u32(2).u8(0).u32(16384).u32(99), "truncate of relation 99"},
		{"truncate count", []msg{customers, beginMsg(1, 1)}, m('T').u32(1 << 30).u8(0).u32(16384), "truncate lists 1073741824 relations"},
		{"truncate outside transaction", []msg{customers}, m('T').u32(1).u8(0).u32(16384), "truncate outside a transaction"},
		{"column count", []msg{customers, beginMsg(1, 1)}, m('I').u32(16384).u8('N').tuple("1", "a"), "tuple has 2 columns, relation has 3"},
		{"binary value", []msg{customers, beginMsg(1, 1)}, m('I').u32(16384).u8('N').u16(3).u8('b').u32(1).u8(1).u8('n').u8('n'), `column "id" is in binary format`},
		{"unknown value kind", []msg{customers, beginMsg(1, 1)}, m('I').u32(16384).u8('N').u16(3).u8('n').u8('x').u8('n'), `column "name": unknown value kind 'x'`},
		{"value longer than message", []msg{customers, beginMsg(1, 1)}, m('I').u32(16384).u8('N').u16(3).u8('t').u32(0xFFFFFFFF), "truncated"},
		{"insert without N", []msg{customers, beginMsg(1, 1)}, m('I').u32(16384).u8('K').tuple("1", "a", "b"), "expected new tuple 'N', got 'K'"},
		{"update with bad tuple type", []msg{customers, beginMsg(1, 1)}, m('U').u32(16384).u8('X'), "expected tuple 'K', 'O' or 'N', got 'X'"},
		{"delete with new tuple", []msg{customers, beginMsg(1, 1)}, m('D').u32(16384).u8('N').tuple("1", "a", "b"), "expected old tuple 'K' or 'O', got 'N'"},
		{"unterminated string", nil, m('R').u32(1).u8('p'), "string is not terminated"},
		{"relation column count", nil, m('R').u32(1).str("s").str("t").u8('d').u16(1000), "announces 1000 columns"},
		{"replica identity", nil, relationMsg(1, "s", "t", 'x', col{"a", 23, -1, false}), "unknown replica identity 'x'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder()
			for _, b := range tt.before {
				mustDecode(t, d, b)
			}
			_, ok, err := d.Decode(0x1000, tt.msg)
			if err == nil {
				t.Fatalf("Decode succeeded (ok=%v), want error containing %q", ok, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if ok {
				t.Error("Decode returned ok=true with an error")
			}
		})
	}
}

// session is a whole replication session, decoded by TestDecodeGolden and
// used as the fuzz corpus.
func session() []msg {
	return []msg{
		customers,
		orders,
		m('Y').u32(16400).str("public").str("mood"),
		beginMsg(0x16B3748, 731),
		m('O').u64(0x100).str("upstream"),
		m('I').u32(16384).u8('N').tuple("1", "Ann", "NULL"),
		m('U').u32(16384).u8('N').tuple("1", "Anne", "TOAST"),
		m('U').u32(16384).u8('K').tuple("1", "NULL", "NULL").u8('N').tuple("2", "Anne", "TOAST"),
		m('U').u32(16390).u8('O').tuple("A-1", "1.00").u8('N').tuple("A-1", "2.00"),
		m('D').u32(16390).u8('O').tuple("A-1", "2.00"),
		m('D').u32(16384).u8('K').tuple("2", "NULL", "NULL"),
		m('T').u32(2).u8(1).u32(16384).u32(16390),
		commitMsg(0x16B3748, 0x16B3778),
		beginMsg(0x16B3800, 732),
		m('M').u8(1).u64(0x16B37F0).str("prefix").u32(0),
		commitMsg(0x16B3800, 0x16B3830),
	}
}

func TestDecodeGolden(t *testing.T) {
	d := NewDecoder()
	var out strings.Builder
	for _, b := range session() {
		c, ok, err := d.Decode(0, b)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out.WriteString(render(c))
			out.WriteByte('\n')
		}
	}
	goldenFile(t, "decode_session.golden", out.String())
}

// render writes a change on one line, in a form meant for golden files.
func render(c Change) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s xid=%d commit=%s seq=%d", c.Op, c.Tx.XID, c.Tx.CommitLSN, c.Seq)
	switch c.Op {
	case Begin:
		fmt.Fprintf(&b, " time=%s", c.Tx.CommitTime.Format(time.RFC3339Nano))
	case Commit:
		fmt.Fprintf(&b, " end=%s", c.Tx.EndLSN)
	case Truncate:
		for _, r := range c.Truncated {
			fmt.Fprintf(&b, " %s", r.Table)
		}
	case Message:
		fmt.Fprintf(&b, " prefix=%q content=%q", c.Prefix, c.Content)
	default:
		fmt.Fprintf(&b, " %s", c.Relation.Table)
		if c.Old != nil {
			fmt.Fprintf(&b, " old=%s", renderValues(c.Relation, c.Old))
		}
		if c.New != nil {
			fmt.Fprintf(&b, " new=%s", renderValues(c.Relation, c.New))
		}
	}
	return b.String()
}

func renderValues(rel *Relation, vals []Value) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		var s string
		switch v.Kind {
		case Absent:
			s = "absent"
		case Null:
			s = "null"
		case Unchanged:
			s = "unchanged"
		case Text:
			s = fmt.Sprintf("%q", v.Text)
		}
		parts[i] = rel.Columns[i].Name + ":" + s
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func goldenFile(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, filepath.Join("testdata", name), got)
}

// FuzzDecode feeds arbitrary messages to a Decoder that knows two relations
// and has a transaction open. Decode must return an error or a well-formed
// change, never panic.
func FuzzDecode(f *testing.F) {
	for _, b := range session() {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder()
		for _, b := range []msg{customers, orders, beginMsg(0x16B3748, 731)} {
			if _, _, err := d.Decode(0, b); err != nil {
				t.Fatal(err)
			}
		}
		c, ok, err := d.Decode(0, data)
		if err != nil {
			if ok {
				t.Fatal("ok=true with an error")
			}
			return
		}
		if !ok {
			return
		}
		switch c.Op {
		case Insert, Update, Delete:
			if c.Relation == nil {
				t.Fatalf("%s without a relation", c.Op)
			}
			for _, vals := range [][]Value{c.Old, c.New} {
				if vals != nil && len(vals) != len(c.Relation.Columns) {
					t.Fatalf("%d values for %d columns", len(vals), len(c.Relation.Columns))
				}
			}
		case Truncate:
			if len(c.Truncated) == 0 {
				t.Fatal("truncate without relations")
			}
		}
	})
}

func BenchmarkDecodeUpdate(b *testing.B) {
	d := NewDecoder()
	for _, m := range []msg{customers, beginMsg(0x16B3748, 731)} {
		if _, _, err := d.Decode(0, m); err != nil {
			b.Fatal(err)
		}
	}
	data := m('U').u32(16384).u8('N').tuple("12345", "Ann Example", "TOAST")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Decode(0, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeInsert decodes an insert of a narrow row: a bigint key,
// two short texts, a numeric and a timestamptz.
func BenchmarkDecodeInsert(b *testing.B) {
	d := NewDecoder()
	items := relationMsg(16400, "bench", "items", 'd',
		col{"id", 20, -1, true}, col{"name", 25, -1, false}, col{"city", 25, -1, false},
		col{"amount", 1700, 786438, false}, col{"updated_at", 1184, -1, false})
	for _, m := range []msg{items, beginMsg(0x16B3748, 731)} {
		if _, _, err := d.Decode(0, m); err != nil {
			b.Fatal(err)
		}
	}
	data := m('I').u32(16400).u8('N').tuple("123456", "customer 123456", "Lisbon", "1234.56", "2024-01-02 10:17:36+00")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Decode(0, data); err != nil {
			b.Fatal(err)
		}
	}
}
