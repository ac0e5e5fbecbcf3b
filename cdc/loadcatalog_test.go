package cdc_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/statefeed/statefeed/cdc"
)

func TestLoadCatalog(t *testing.T) {
	db := newDB(t, pg, `
		CREATE TABLE pk (
			b text NOT NULL,
			gone int,
			a int,
			price numeric(10,2),
			code char(4),
			doubled int GENERATED ALWAYS AS (a * 2) STORED,
			PRIMARY KEY (b, a)
		);
		ALTER TABLE pk DROP COLUMN gone;
		CREATE UNIQUE INDEX pk_code ON pk (code) INCLUDE (price);
		CREATE UNIQUE INDEX pk_lower ON pk (lower(b));
		CREATE UNIQUE INDEX pk_partial ON pk (price) WHERE price > 0;

		CREATE TABLE byindex (id int NOT NULL, email text NOT NULL, note text);
		CREATE UNIQUE INDEX byindex_email ON byindex (email);
		ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_email;

		CREATE TABLE full_ident (x int, y text);
		ALTER TABLE full_ident REPLICA IDENTITY FULL;

		CREATE TABLE nothing (id int PRIMARY KEY);
		ALTER TABLE nothing REPLICA IDENTITY NOTHING;

		CREATE TABLE nokey (v text);
		CREATE VIEW v AS SELECT 1 AS one;`)

	names := []cdc.TableName{public("pk"), public("byindex"), public("full_ident"), public("nothing"), public("nokey"), public("v"), public("missing")}
	got, err := cdc.LoadCatalog(context.Background(), connect(t, pg, db), names)
	if err != nil {
		t.Fatal(err)
	}
	want := cdc.Catalog{
		public("pk"): {
			Name: public("pk"),
			Columns: []cdc.TableColumn{
				{Name: "b", TypeOID: 25, Type: "text", NotNull: true},
				{Name: "a", TypeOID: 23, Type: "integer", NotNull: true},
				{Name: "price", TypeOID: 1700, Type: "numeric(10,2)"},
				{Name: "code", TypeOID: 1042, Type: "character(4)"},
			},
			PrimaryKey:      []string{"b", "a"},
			ReplicaIdentity: 'd',
			IdentityColumns: []string{"b", "a"},
			UniqueKeys:      [][]string{{"b", "a"}, {"code"}},
		},
		public("byindex"): {
			Name: public("byindex"),
			Columns: []cdc.TableColumn{
				{Name: "id", TypeOID: 23, Type: "integer", NotNull: true},
				{Name: "email", TypeOID: 25, Type: "text", NotNull: true},
				{Name: "note", TypeOID: 25, Type: "text"},
			},
			ReplicaIdentity: 'i',
			IdentityColumns: []string{"email"},
			UniqueKeys:      [][]string{{"email"}},
		},
		public("full_ident"): {
			Name: public("full_ident"),
			Columns: []cdc.TableColumn{
				{Name: "x", TypeOID: 23, Type: "integer"},
				{Name: "y", TypeOID: 25, Type: "text"},
			},
			ReplicaIdentity: 'f',
			IdentityColumns: []string{"x", "y"},
		},
		public("nothing"): {
			Name:            public("nothing"),
			Columns:         []cdc.TableColumn{{Name: "id", TypeOID: 23, Type: "integer", NotNull: true}},
			PrimaryKey:      []string{"id"},
			ReplicaIdentity: 'n',
			UniqueKeys:      [][]string{{"id"}},
		},
		public("nokey"): {
			Name:            public("nokey"),
			Columns:         []cdc.TableColumn{{Name: "v", TypeOID: 25, Type: "text"}},
			ReplicaIdentity: 'd',
		},
	}
	// Each table's OID is the one pgoutput announces it under.
	conn := connect(t, pg, db)
	for name, tbl := range got {
		var oid uint32
		if err := conn.QueryRow(context.Background(), `SELECT $1::regclass::oid`, pgx.Identifier{name.Schema, name.Name}.Sanitize()).Scan(&oid); err != nil {
			t.Fatal(err)
		}
		if tbl.OID != oid {
			t.Errorf("%s: OID %d, want %d", name, tbl.OID, oid)
		}
		tbl.OID = 0
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("catalog (-want +got):\n%s", diff)
	}
}
