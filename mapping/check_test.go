package mapping

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/internal/golden"
)

func testCatalog() cdc.Catalog {
	all := func(cols []cdc.TableColumn) []string {
		var names []string
		for _, c := range cols {
			names = append(names, c.Name)
		}
		return names
	}
	cust := &cdc.Table{
		Name: cdc.TableName{Schema: "legacy", Name: "cust_mstr"},
		Columns: []cdc.TableColumn{
			{Name: "cst_id", TypeOID: pgtype.Int4OID, Type: "integer", NotNull: true},
			{Name: "cst_cd", TypeOID: pgtype.BPCharOID, Type: "character(8)", NotNull: true},
			{Name: "cst_nm", TypeOID: pgtype.VarcharOID, Type: "character varying(80)", NotNull: true},
			{Name: "eml_addr", TypeOID: pgtype.VarcharOID, Type: "character varying(120)"},
			{Name: "cty_nm", TypeOID: pgtype.VarcharOID, Type: "character varying(60)"},
			{Name: "ctry_cd", TypeOID: pgtype.BPCharOID, Type: "character(2)"},
			{Name: "crd_lmt", TypeOID: pgtype.NumericOID, Type: "numeric(12,2)", NotNull: true},
			{Name: "rec_stat", TypeOID: pgtype.BPCharOID, Type: "character(1)", NotNull: true},
			{Name: "upd_ts", TypeOID: pgtype.TimestamptzOID, Type: "timestamp with time zone", NotNull: true},
			{Name: "tags", TypeOID: pgtype.TextArrayOID, Type: "text[]"},
		},
		PrimaryKey:      []string{"cst_id"},
		ReplicaIdentity: 'f',
		UniqueKeys:      [][]string{{"cst_id"}, {"cst_cd"}},
	}
	cust.IdentityColumns = all(cust.Columns)
	return cdc.Catalog{
		cust.Name: cust,
		{Schema: "public", Name: "customers"}: {
			Name: cdc.TableName{Schema: "public", Name: "customers"},
			Columns: []cdc.TableColumn{
				{Name: "id", TypeOID: pgtype.Int8OID, Type: "bigint", NotNull: true},
				{Name: "email", TypeOID: pgtype.TextOID, Type: "text"},
				{Name: "name", TypeOID: pgtype.TextOID, Type: "text"},
			},
			PrimaryKey: []string{"id"}, ReplicaIdentity: 'd', IdentityColumns: []string{"id"},
		},
		{Schema: "public", Name: "nopk"}: {
			Name:            cdc.TableName{Schema: "public", Name: "nopk"},
			Columns:         []cdc.TableColumn{{Name: "msg", TypeOID: pgtype.TextOID, Type: "text"}},
			ReplicaIdentity: 'd',
		},
		{Schema: "public", Name: "nothing"}: {
			Name:            cdc.TableName{Schema: "public", Name: "nothing"},
			Columns:         []cdc.TableColumn{{Name: "id", TypeOID: pgtype.Int4OID, Type: "integer"}},
			PrimaryKey:      []string{"id"},
			ReplicaIdentity: 'n',
		},
	}
}

// TestCheckProblems checks the wording and positions of catalog problems.
func TestCheckProblems(t *testing.T) {
	for _, name := range []string{"missing_column", "replica_identity", "no_primary_key", "identity_nothing", "bad_expressions", "missing_table"} {
		t.Run(name, func(t *testing.T) {
			s, err := Load([]string{filepath.Join("testdata", "check", name+".yaml")})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			err = s.Check(testCatalog())
			golden.Check(t, filepath.Join("testdata", "check", name+".golden"), errText(err))
		})
	}
}

func TestCheckDefaultsKeyAndColumns(t *testing.T) {
	s, err := Load([]string{"testdata/load/valid/customer.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(testCatalog()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	m := s.Mappings[0]
	if got := strings.Join(m.c.filter.columns, ","); got != "rec_stat" {
		t.Errorf("filter columns = %q, want rec_stat", got)
	}
	for _, f := range m.Fields {
		if f.Name == "tags" {
			if got := strings.Join(f.columns, ","); got != "upd_ts" {
				t.Errorf("tags columns = %q, want upd_ts", got)
			}
		}
	}
	s2, _ := Load([]string{"testdata/check/missing_column.yaml"})
	s2.Mappings[0].Fields = s2.Mappings[0].Fields[:1]
	if err := s2.Check(testCatalog()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if got := strings.Join(s2.Mappings[0].Key, ","); got != "id" {
		t.Errorf("default key = %q, want the primary key id", got)
	}
}
