package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// LoadCatalog describes the named tables from the system catalogs. Tables
// that do not exist (or are not ordinary or partitioned tables) are absent
// from the result. It reads only pg_catalog, so it takes no lock on the
// tables themselves.
//
// Generated columns are left out: pgoutput does not send them, so a
// mapping cannot use them.
func LoadCatalog(ctx context.Context, conn *pgx.Conn, names []TableName) (Catalog, error) {
	cat := make(Catalog, len(names))
	if len(names) == 0 {
		return cat, nil
	}
	schemas := make([]string, len(names))
	tables := make([]string, len(names))
	for i, n := range names {
		schemas[i], tables[i] = n.Schema, n.Name
	}

	rows, err := conn.Query(ctx, `
		SELECT c.oid, n.nspname, c.relname, c.relreplident::text
		FROM unnest($1::text[], $2::text[]) AS want(schema, name)
		JOIN pg_catalog.pg_namespace n ON n.nspname = want.schema
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = want.name
		WHERE c.relkind IN ('r', 'p')`, schemas, tables)
	if err != nil {
		return nil, fmt.Errorf("load catalog: tables: %w", err)
	}
	byOID := make(map[uint32]*Table)
	var oids []uint32
	for rows.Next() {
		var (
			oid   uint32
			t     Table
			ident string
		)
		if err := rows.Scan(&oid, &t.Name.Schema, &t.Name.Name, &ident); err != nil {
			return nil, fmt.Errorf("load catalog: tables: %w", err)
		}
		if len(ident) == 1 {
			t.ReplicaIdentity = ident[0]
		}
		t.OID = oid
		byOID[oid] = &t
		oids = append(oids, oid)
		cat[t.Name] = &t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load catalog: tables: %w", err)
	}
	if len(oids) == 0 {
		return cat, nil
	}

	rows, err = conn.Query(ctx, `
		SELECT a.attrelid, a.attname, a.atttypid, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
		FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attrelid, a.attnum`, oids)
	if err != nil {
		return nil, fmt.Errorf("load catalog: columns: %w", err)
	}
	for rows.Next() {
		var (
			oid uint32
			c   TableColumn
		)
		if err := rows.Scan(&oid, &c.Name, &c.TypeOID, &c.Type, &c.NotNull); err != nil {
			return nil, fmt.Errorf("load catalog: columns: %w", err)
		}
		t := byOID[oid]
		t.Columns = append(t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load catalog: columns: %w", err)
	}

	// Only key columns of valid unique indexes on plain columns: an index
	// with expressions or a predicate does not identify a row by columns.
	// INCLUDE columns (past indnkeyatts) are not part of the key.
	rows, err = conn.Query(ctx, `
		SELECT i.indrelid, i.indisprimary, i.indisreplident,
			ARRAY(
				SELECT a.attname
				FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE k.ord <= i.indnkeyatts
				ORDER BY k.ord)
		FROM pg_catalog.pg_index i
		WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND i.indisvalid AND i.indislive
			AND i.indexprs IS NULL AND i.indpred IS NULL
		ORDER BY i.indrelid, i.indisprimary DESC, i.indexrelid`, oids)
	if err != nil {
		return nil, fmt.Errorf("load catalog: indexes: %w", err)
	}
	identIndex := make(map[uint32][]string)
	for rows.Next() {
		var (
			oid              uint32
			primary, replIdx bool
			cols             []string
		)
		if err := rows.Scan(&oid, &primary, &replIdx, &cols); err != nil {
			return nil, fmt.Errorf("load catalog: indexes: %w", err)
		}
		t := byOID[oid]
		if primary {
			t.PrimaryKey = cols
		}
		if replIdx {
			identIndex[oid] = cols
		}
		t.UniqueKeys = append(t.UniqueKeys, cols)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load catalog: indexes: %w", err)
	}

	for oid, t := range byOID {
		switch t.ReplicaIdentity {
		case 'd':
			t.IdentityColumns = t.PrimaryKey
		case 'i':
			t.IdentityColumns = identIndex[oid]
		case 'f':
			for _, c := range t.Columns {
				t.IdentityColumns = append(t.IdentityColumns, c.Name)
			}
		}
	}
	return cat, nil
}
