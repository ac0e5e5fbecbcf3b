package mapping

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/internal/golden"
)

func TestLoadValid(t *testing.T) {
	s, err := Load([]string{"testdata/load/valid"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []*Mapping{
		{
			File: "testdata/load/valid/customer.yaml", Entity: "customer", Topic: "crm.customer.v1",
			Table: cdc.TableName{Schema: "legacy", Name: "cust_mstr"}, Key: []string{"cst_cd"},
			Filter: "rec_stat != 'D'", OnTruncate: TruncateIgnore,
			Fields: []*Field{
				{Name: "id", Path: "fields.id", Line: 9, Column: "cst_id"},
				{Name: "code", Path: "fields.code", Line: 10, Column: "cst_cd"},
				{Name: "name", Path: "fields.name", Line: 11, Expr: "trim(cst_nm ?? \"\")", exprLine: 11},
				{Name: "email", Path: "fields.email", Line: 12, Column: "eml_addr"},
				{Name: "active", Path: "fields.active", Line: 13, Expr: "rec_stat == 'A'", exprLine: 13},
				{Name: "limit", Path: "fields.limit", Line: 14, Expr: "crd_lmt * 2", exprLine: 14},
				{Name: "address", Path: "fields.address", Line: 15, Fields: []*Field{
					{Name: "city", Path: "fields.address.city", Line: 16, Column: "cty_nm"},
					{Name: "country", Path: "fields.address.country", Line: 17, Column: "ctry_cd"},
				}},
				{Name: "constant", Path: "fields.constant", Line: 18, Expr: "1", exprLine: 18},
				{Name: "tags", Path: "fields.tags", Line: 19, Expr: "upd_ts.Year() > 2000\n  && true\n", exprLine: 20},
			},
		},
		{
			File: "testdata/load/valid/order.yml", Entity: "order", Topic: "sales.order.v1",
			Table: cdc.TableName{Schema: "public", Name: "ord_hdr"}, OnTruncate: TruncateTombstone,
			Fields: []*Field{{Name: "number", Path: "fields.number", Line: 5, Column: "ord_no"}},
		},
	}
	opts := cmp.Options{cmp.AllowUnexported(Field{}), cmpopts.IgnoreUnexported(Mapping{})}
	if diff := cmp.Diff(want, s.Mappings, opts); diff != "" {
		t.Errorf("mappings (-want +got):\n%s", diff)
	}
	wantTables := []cdc.TableName{{Schema: "legacy", Name: "cust_mstr"}, {Schema: "public", Name: "ord_hdr"}}
	if diff := cmp.Diff(wantTables, s.Tables()); diff != "" {
		t.Errorf("Tables() (-want +got):\n%s", diff)
	}
}

// TestLoadProblems checks the wording and positions of loader errors.
func TestLoadProblems(t *testing.T) {
	tests := []struct {
		name  string
		paths []string
	}{
		{"broken", []string{"testdata/load/broken"}},
		{"duplicates", []string{"testdata/load/dup/a.yaml", "testdata/load/dup/b.yaml"}},
		{"missing", []string{"testdata/load/nope.yaml", "testdata/load/valid/README.txt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.paths)
			golden.Check(t, filepath.Join("testdata", "load_"+tt.name+".golden"), errText(err))
		})
	}
}

func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"testdata/load/valid", "testdata/load/broken", "testdata/load/dup"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "m.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Load([]string{path})
		if err != nil {
			return
		}
		// A loaded mapping checks against any catalog without panicking.
		_ = s.Check(testCatalog())
	})
}
