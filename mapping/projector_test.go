package mapping

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/internal/golden"
)

// row builds a tuple: "<null>", "<unchanged>" and "<absent>" stand for
// those kinds, anything else is text.
func row(vals ...string) []cdc.Value {
	r := make([]cdc.Value, len(vals))
	for i, v := range vals {
		switch v {
		case "<null>":
			r[i] = cdc.Value{Kind: cdc.Null}
		case "<unchanged>":
			r[i] = cdc.Value{Kind: cdc.Unchanged}
		case "<absent>":
			r[i] = cdc.Value{Kind: cdc.Absent}
		default:
			r[i] = cdc.Value{Kind: cdc.Text, Text: []byte(v)}
		}
	}
	return r
}

// relationOf announces a catalog table as pgoutput would.
func relationOf(t *cdc.Table, id uint32) *cdc.Relation {
	rel := &cdc.Relation{ID: id, Table: t.Name, ReplicaIdentity: t.ReplicaIdentity}
	for _, c := range t.Columns {
		ident := false
		for _, ic := range t.IdentityColumns {
			ident = ident || ic == c.Name
		}
		rel.Columns = append(rel.Columns, cdc.Column{Name: c.Name, TypeOID: c.TypeOID, TypeMod: -1, Identity: ident})
	}
	return rel
}

// fakeRows is a RowReader over fixed current rows, keyed by the text of
// the by-columns joined with "|".
type fakeRows struct {
	rows  map[string][]cdc.Value
	calls []string
	err   error
}

func (f *fakeRows) ReadRow(_ context.Context, rel *cdc.Relation, by, cols []int, r []cdc.Value) ([]cdc.Value, bool, error) {
	var parts []string
	for _, i := range by {
		parts = append(parts, rel.Columns[i].Name+"="+string(r[i].Text))
	}
	k := strings.Join(parts, "|")
	f.calls = append(f.calls, k)
	if f.err != nil {
		return nil, false, f.err
	}
	cur, ok := f.rows[k]
	if !ok {
		return nil, false, nil
	}
	// Only the columns asked for are read.
	read := make([]cdc.Value, len(cur))
	for _, i := range cols {
		read[i] = cur[i]
	}
	return read, true, nil
}

func loadChecked(t testing.TB, files ...string) *Set {
	t.Helper()
	s, err := Load(files)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := s.Check(testCatalog()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	return s
}

// TestProject runs changes through a projector and compares the records
// (or the error) with testdata/project.golden.
func TestProject(t *testing.T) {
	s := loadChecked(t, "testdata/project/customer.yaml", "testdata/project/people.yaml", "testdata/project/pair.yaml")
	cat := testCatalog()
	cust := relationOf(cat[cdc.TableName{Schema: "legacy", Name: "cust_mstr"}], 1)
	people := relationOf(cat[cdc.TableName{Schema: "public", Name: "customers"}], 2)
	unmapped := &cdc.Relation{ID: 3, Table: cdc.TableName{Schema: "public", Name: "other"}, Columns: []cdc.Column{{Name: "x", TypeOID: 25}}}
	tx := &cdc.Tx{XID: 7, CommitLSN: pglogrepl.LSN(0x16B3748)}

	// cst_id, cst_cd, cst_nm, eml_addr, cty_nm, ctry_cd, crd_lmt, rec_stat, upd_ts, tags
	active := row("1", "C0001   ", "  Ada Lovelace ", "ada@example.com", "London", "GB", "1200.50", "A", "2024-01-02 03:04:05.5+00", `{vip,"early adopter"}`)
	inactive := row("1", "C0001   ", "Ada", "<null>", "<null>", "<null>", "0.00", "I", "2024-01-02 03:04:05+01", "<null>")
	deleted := row("1", "C0001   ", "Ada", "<null>", "<null>", "<null>", "0.00", "D", "2024-01-02 03:04:05+00", "{}")
	rekeyed := row("1", "C0002   ", "Ada", "<null>", "<null>", "<null>", "0.00", "A", "2024-01-02 03:04:05+00", "{}")
	toasted := row("1", "C0001   ", "Ada", "<unchanged>", "<null>", "<null>", "0.00", "A", "2024-01-02 03:04:05+00", "<unchanged>")
	toastedRekey := row("1", "C0002   ", "Ada", "<unchanged>", "<null>", "<null>", "0.00", "A", "2024-01-02 03:04:05+00", "<unchanged>")
	nullName := row("1", "C0001   ", "<null>", "<null>", "<null>", "<null>", "0.00", "A", "2024-01-02 03:04:05+00", "<null>")
	nullKey := row("1", "<null>", "Ada", "<null>", "<null>", "<null>", "0.00", "A", "2024-01-02 03:04:05+00", "<null>")
	current := &fakeRows{rows: map[string][]cdc.Value{
		"cst_id=1": row("1", "C0001   ", "Ada", "ada@example.com", "<null>", "<null>", "0.00", "A", "2024-01-02 03:04:05+00", "{reread}"),
	}}
	gone := &fakeRows{}

	tests := []struct {
		name string
		c    cdc.Change
		rr   *fakeRows
	}{
		{"insert in filter", cdc.Change{Op: cdc.Insert, Relation: cust, New: active}, nil},
		{"insert out of filter", cdc.Change{Op: cdc.Insert, Relation: cust, New: deleted}, nil},
		{"update in to in (full identity)", cdc.Change{Op: cdc.Update, Relation: cust, Old: active, New: inactive}, nil},
		{"update in to out (soft delete)", cdc.Change{Op: cdc.Update, Relation: cust, Old: active, New: deleted}, nil},
		{"update out to in (undelete)", cdc.Change{Op: cdc.Update, Relation: cust, Old: deleted, New: active}, nil},
		{"update out to out", cdc.Change{Op: cdc.Update, Relation: cust, Old: deleted, New: deleted}, nil},
		{"update changes the key", cdc.Change{Op: cdc.Update, Relation: cust, Old: active, New: rekeyed}, nil},
		{"update changes the key of an out row", cdc.Change{Op: cdc.Update, Relation: cust, Old: deleted, New: rekeyed}, nil},
		{"delete", cdc.Change{Op: cdc.Delete, Relation: cust, Old: active}, nil},
		{"delete of a soft-deleted row", cdc.Change{Op: cdc.Delete, Relation: cust, Old: deleted}, nil},
		{"unchanged toast is read back", cdc.Change{Op: cdc.Update, Relation: cust, Old: active, New: toasted}, current},
		{"unchanged toast, row gone", cdc.Change{Op: cdc.Update, Relation: cust, New: toasted}, gone},
		{"unchanged toast, key changed, row gone", cdc.Change{Op: cdc.Update, Relation: cust, Old: active, New: toastedRekey}, gone},
		{"unchanged toast, read fails", cdc.Change{Op: cdc.Update, Relation: cust, New: toasted}, &fakeRows{err: errors.New("connection refused")}},
		{"expression fails", cdc.Change{Op: cdc.Insert, Tx: tx, Relation: cust, New: nullName}, nil},
		{"null key", cdc.Change{Op: cdc.Insert, Tx: tx, Relation: cust, New: nullKey}, nil},
		{"truncate", cdc.Change{Op: cdc.Truncate, Tx: tx, Truncated: []*cdc.Relation{cust}}, nil},
		{"truncate of an unmapped table", cdc.Change{Op: cdc.Truncate, Truncated: []*cdc.Relation{unmapped}}, nil},
		{"unmapped table", cdc.Change{Op: cdc.Insert, Relation: unmapped, New: row("x")}, nil},
		// public.customers: default replica identity, so the old row is
		// the primary key at most and filter transitions are imprecise.
		{"default identity insert", cdc.Change{Op: cdc.Insert, Relation: people, New: row("7", "g@example.com", "Grace")}, nil},
		{"default identity update out of filter", cdc.Change{Op: cdc.Update, Relation: people, New: row("7", "g@example.com", "")}, nil},
		{"default identity update with key change", cdc.Change{Op: cdc.Update, Relation: people, Old: row("6", "<absent>", "<absent>"), New: row("7", "h@example.com", "Grace")}, nil},
		{"default identity delete", cdc.Change{Op: cdc.Delete, Relation: people, Old: row("7", "<absent>", "<absent>")}, nil},
		{"begin", cdc.Change{Op: cdc.Begin, Tx: tx}, nil},
	}
	var b strings.Builder
	p := NewProjector(s)
	for _, tt := range tests {
		fmt.Fprintf(&b, "== %s\n", tt.name)
		var rr RowReader
		if tt.rr != nil {
			rr = tt.rr
			tt.rr.calls = nil
		}
		recs, err := p.Project(context.Background(), &tt.c, rr, nil)
		if tt.rr != nil {
			for _, call := range tt.rr.calls {
				fmt.Fprintf(&b, "read back %s\n", call)
			}
		}
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			continue
		}
		if len(recs) == 0 {
			b.WriteString("(no records)\n")
		}
		for _, r := range recs {
			b.WriteString(formatRecord(r))
		}
	}
	golden.Check(t, "testdata/project.golden", b.String())
}

func formatRecord(r Record) string {
	if r.Value == nil {
		return fmt.Sprintf("%s %s key=%q tombstone\n", r.Topic, r.Entity, r.Key)
	}
	return fmt.Sprintf("%s %s key=%q value=%s\n", r.Topic, r.Entity, r.Key, r.Value)
}

func TestProjectRebindsOnSchemaChange(t *testing.T) {
	s := loadChecked(t, "testdata/project/people.yaml")
	rel := relationOf(testCatalog()[cdc.TableName{Schema: "public", Name: "customers"}], 2)
	p := NewProjector(s)
	if _, err := p.Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: rel, New: row("1", "a@b", "A")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// The same relation ID announced again without the email column.
	changed := &cdc.Relation{ID: rel.ID, Table: rel.Table, ReplicaIdentity: 'd', Columns: []cdc.Column{rel.Columns[0], rel.Columns[2]}}
	_, err := p.Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: changed, New: row("1", "A")}, nil, nil)
	want := `mapping testdata/project/people.yaml: fields.contact.email: column "email" no longer exists in table public.customers (dropped or renamed while the bridge was running); update the mapping and restart the bridge — the slot was not confirmed past this change`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant %s", err, want)
	}
	var te *TruncateError
	_, err = p.Project(context.Background(), &cdc.Change{Op: cdc.Truncate, Truncated: []*cdc.Relation{changed}}, nil, nil)
	if !errors.As(err, &te) || te.File != "testdata/project/people.yaml" {
		t.Errorf("truncate error = %v, want a *TruncateError naming people.yaml", err)
	}
}

func TestProjectRowMatchesInsert(t *testing.T) {
	s := loadChecked(t, "testdata/project/customer.yaml")
	rel := relationOf(testCatalog()[cdc.TableName{Schema: "legacy", Name: "cust_mstr"}], 1)
	r := row("1", "C0001   ", " Ada ", "<null>", "Paris", "FR", "5.00", "A", "2024-01-02 03:04:05+00", "{x}")
	recs, err := NewProjector(s).Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: rel, New: r}, nil, nil)
	if err != nil || len(recs) != 1 {
		t.Fatalf("Project = %v, %v", recs, err)
	}
	key, value, in, err := s.Mappings[0].ProjectRow(rel, r)
	if err != nil || !in {
		t.Fatalf("ProjectRow = in %v, %v", in, err)
	}
	if string(key) != string(recs[0].Key) || string(value) != string(recs[0].Value) {
		t.Errorf("ProjectRow = %s %s, Project = %s %s", key, value, recs[0].Key, recs[0].Value)
	}
	r[7] = cdc.Value{Kind: cdc.Text, Text: []byte("D")}
	key, value, in, err = s.Mappings[0].ProjectRow(rel, r)
	if err != nil || in || value != nil || string(key) != "C0001" {
		t.Errorf("ProjectRow of a filtered-out row = %q %q %v %v; want key C0001, no value, not in", key, value, in, err)
	}
}

func BenchmarkProjectInsert(b *testing.B) {
	s := loadChecked(b, "testdata/project/people.yaml")
	// A six-column row: three columns, then the same table widened.
	cat := testCatalog()
	rel := relationOf(cat[cdc.TableName{Schema: "public", Name: "customers"}], 2)
	rel.Columns = append(rel.Columns,
		cdc.Column{Name: "created_at", TypeOID: 1184}, cdc.Column{Name: "balance", TypeOID: 1700}, cdc.Column{Name: "active", TypeOID: 16})
	c := &cdc.Change{Op: cdc.Insert, Relation: rel, New: row("123456", "grace@example.com", "Grace Hopper", "2024-01-02 03:04:05.123456+00", "1234.50", "t")}
	p := NewProjector(s)
	out := make([]Record, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		out, err = p.Project(context.Background(), c, nil, out[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProjectInsertColumnsOnly(b *testing.B) {
	s := loadChecked(b, "testdata/project/pair.yaml")
	rel := relationOf(testCatalog()[cdc.TableName{Schema: "legacy", Name: "cust_mstr"}], 1)
	c := &cdc.Change{Op: cdc.Insert, Relation: rel, New: row("1", "C0001   ", "Ada", "ada@example.com", "London", "GB", "1200.50", "A", "2024-01-02 03:04:05.5+00", "{}")}
	p := NewProjector(s)
	out := make([]Record, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		out, _ = p.Project(context.Background(), c, nil, out[:0])
	}
}

// BenchmarkProjectWide projects an insert of a row of about 2 KB across 20
// columns of mixed types, with a nested object and one expression.
func BenchmarkProjectWide(b *testing.B) {
	cols := []struct {
		name string
		oid  uint32
		text string
	}{
		{"id", pgtype.Int8OID, "123456"},
		{"code", pgtype.TextOID, "W-123456"},
		{"title", pgtype.TextOID, "Title " + strings.Repeat("e10adc3949ba59ab", 2)},
		{"summary", pgtype.TextOID, strings.Repeat("e10adc3949ba59abbe56e057f20f883e", 4)},
		{"description", pgtype.TextOID, strings.Repeat("0a4f6d4a7b8c9d0e1f2a3b4c5d6e7f80", 26)},
		{"notes", pgtype.TextOID, strings.Repeat("9f86d081884c7d659a2feaa0c55ad015", 16)},
		{"street", pgtype.TextOID, "123456 5d41402abc4b2a76b9719d911017c592 Street"},
		{"city", pgtype.TextOID, "Lisbon"},
		{"country", pgtype.BPCharOID, "PT"},
		{"email", pgtype.TextOID, "user123456@example.com"},
		{"phone", pgtype.TextOID, "+351 000123456"},
		{"quantity", pgtype.Int4OID, "456"},
		{"views", pgtype.Int8OID, "864192"},
		{"price", pgtype.NumericOID, "12.3456"},
		{"ratio", pgtype.Float8OID, "41152"},
		{"active", pgtype.BoolOID, "t"},
		{"created_at", pgtype.TimestamptzOID, "2024-01-02 10:17:36+00"},
		{"due_on", pgtype.DateOID, "2024-12-09"},
		{"ref", pgtype.UUIDOID, "e10adc39-49ba-59ab-be56-e057f20f883e"},
		{"attrs", pgtype.JSONBOID, `{"tag": "5d41402abc4b2a76b9719d911017c592", "rank": 56, "flags": [true, false, null], "score": 17636.571428571429}`},
	}
	tbl := &cdc.Table{Name: cdc.TableName{Schema: "bench", Name: "wide"}, PrimaryKey: []string{"id"}, ReplicaIdentity: 'd', IdentityColumns: []string{"id"}}
	var texts []string
	for _, c := range cols {
		tbl.Columns = append(tbl.Columns, cdc.TableColumn{Name: c.name, TypeOID: c.oid, NotNull: c.name == "id"})
		texts = append(texts, c.text)
	}
	s, err := Load([]string{"testdata/project/wide.yaml"})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Check(cdc.Catalog{tbl.Name: tbl}); err != nil {
		b.Fatal(err)
	}
	c := &cdc.Change{Op: cdc.Insert, Relation: relationOf(tbl, 1), New: row(texts...)}
	p := NewProjector(s)
	out := make([]Record, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		out, err = p.Project(context.Background(), c, nil, out[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(out[0].Value)))
}
