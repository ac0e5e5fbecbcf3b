package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// shape is a table layout with its mapping. Every workload gets its own
// table, bench.<workload>, and topic, bench.<workload>.
type shape struct {
	// create is the CREATE TABLE statement; %[1]s is the table.
	create string
	// insert inserts the rows with ids %[2]d to %[3]d into table %[1]s.
	insert string
	// mapping is the mapping file; %[1]s is the table's name in schema
	// bench, which is also its topic's name after "bench.".
	mapping string
}

// narrow rows: a bigint key, two short texts, a numeric and a timestamptz,
// mapped column for column.
var narrow = shape{
	create: `CREATE TABLE %[1]s (
		id bigint PRIMARY KEY,
		name text NOT NULL,
		city text NOT NULL,
		amount numeric(12,2) NOT NULL,
		updated_at timestamptz NOT NULL)`,
	insert: `INSERT INTO %[1]s
		SELECT g, 'customer ' || g, (ARRAY['Lisbon','Paris','Oslo','Turin','Ghent'])[1 + g %% 5],
			(g %% 100000) / 100.0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
		FROM generate_series(%[2]d, %[3]d) g`,
	mapping: `entity: item
topic: bench.%[1]s
table: bench.%[1]s
key: [id]
fields:
  id: id
  name: name
  city: city
  amount: amount
  updated_at: updated_at
`,
}

// wide rows: about 2 KB across 20 columns of mixed types (below the size
// at which PostgreSQL would TOAST them), mapped with a nested object and
// one expression.
var wide = shape{
	create: `CREATE TABLE %[1]s (
		id bigint PRIMARY KEY,
		code text NOT NULL, title text, summary text, description text, notes text,
		street text, city text, country char(2), email text, phone text,
		quantity integer, views bigint, price numeric(14,4), ratio double precision, active boolean,
		created_at timestamptz, due_on date, ref uuid, attrs jsonb)`,
	insert: `INSERT INTO %[1]s
		SELECT g, 'W-' || g, 'Title ' || md5(g::text),
			repeat(md5(g || 's'), 4), repeat(md5(g || 'd'), 26), repeat(md5(g || 'n'), 16),
			g || ' ' || md5(g || 'a') || ' Street',
			(ARRAY['Lisbon','Paris','Oslo','Turin','Ghent'])[1 + g %% 5],
			(ARRAY['PT','FR','NO','IT','BE'])[1 + g %% 5],
			'user' || g || '@example.com', '+351 ' || lpad((g %% 1000000000)::text, 9, '0'),
			g %% 1000, g * 7, (g %% 1000000) / 10000.0, g / 3.0, g %% 2 = 0,
			timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
			date '2024-01-01' + (g %% 3650)::int, md5(g::text)::uuid,
			jsonb_build_object('rank', g %% 100, 'tag', md5(g || 't'), 'flags', jsonb_build_array(true, false, null), 'score', g / 7.0)
		FROM generate_series(%[2]d, %[3]d) g`,
	mapping: `entity: wide
topic: bench.%[1]s
table: bench.%[1]s
key: [id]
fields:
  id: id
  code: code
  label: lower(code)
  title: title
  summary: summary
  description: description
  notes: notes
  address:
    street: street
    city: city
    country: country
  email: email
  phone: phone
  quantity: quantity
  views: views
  price: price
  ratio: ratio
  active: active
  created_at: created_at
  due_on: due_on
  ref: ref
  attrs: attrs
`,
}

// table is one workload's table.
type table struct {
	shape
	name string // in schema bench
}

func newTable(workload string, s shape) table {
	return table{shape: s, name: strings.ReplaceAll(workload, "-", "_")}
}

func (t table) qualified() string { return database + "." + t.name }
func (t table) topic() string     { return database + "." + t.name }

// publication is the workload's publication, for its table only.
func (t table) publication() string { return database + "_" + t.name }

// setup creates the table and its publication and writes the mapping file.
func (t table) setup(ctx context.Context, conn *pgx.Conn, dir string) (mappingFile string, err error) {
	if _, err := conn.Exec(ctx, fmt.Sprintf(t.create, t.qualified())); err != nil {
		return "", fmt.Errorf("create table %s: %w", t.qualified(), err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", t.publication(), t.qualified())); err != nil {
		return "", fmt.Errorf("create publication %s: %w", t.publication(), err)
	}
	mappingFile = filepath.Join(dir, t.name+".yaml")
	if err := os.WriteFile(mappingFile, []byte(fmt.Sprintf(t.mapping, t.name)), 0o644); err != nil {
		return "", fmt.Errorf("write mapping: %w", err)
	}
	return mappingFile, nil
}

// drop removes the table and its publication.
func (t table) drop(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, fmt.Sprintf("DROP PUBLICATION IF EXISTS %s; DROP TABLE IF EXISTS %s", t.publication(), t.qualified()))
	if err != nil {
		return fmt.Errorf("drop table %s: %w", t.qualified(), err)
	}
	return nil
}

// insertRows inserts the rows with ids from to to, in one statement and so
// in one transaction.
func (t table) insertRows(ctx context.Context, conn *pgx.Conn, from, to int) error {
	if _, err := conn.Exec(ctx, fmt.Sprintf(t.insert, t.qualified(), from, to)); err != nil {
		return fmt.Errorf("insert rows %d to %d into %s: %w", from, to, t.qualified(), err)
	}
	return nil
}

// streamWorkload is a workload that is written first and drained after.
type streamWorkload struct {
	table table
	// seed is the number of rows the table holds before the slots exist.
	seed int
	// write runs the workload and returns the number of row changes it
	// made, which is also the number of records the bridge publishes.
	write func(ctx context.Context, conn *pgx.Conn, t table) (changes int, err error)
}

// streamWorkloads returns the workloads drained by both the bridge and
// pg_recvlogical, by name.
func streamWorkloads(o options) map[string]streamWorkload {
	n, per := o.rows, o.txnRows
	inserts := func(rows int) func(context.Context, *pgx.Conn, table) (int, error) {
		return func(ctx context.Context, conn *pgx.Conn, t table) (int, error) {
			for from := 1; from <= rows; from += per {
				if err := t.insertRows(ctx, conn, from, min(from+per-1, rows)); err != nil {
					return 0, err
				}
			}
			return rows, nil
		}
	}
	return map[string]streamWorkload{
		"stream-insert": {table: newTable("stream-insert", narrow), write: inserts(n)},
		"stream-update": {table: newTable("stream-update", narrow), seed: n, write: func(ctx context.Context, conn *pgx.Conn, t table) (int, error) {
			for from := 1; from <= n; from += per {
				to := min(from+per-1, n)
				sql := fmt.Sprintf("UPDATE %s SET amount = amount + 1, updated_at = updated_at + interval '1 day' WHERE id BETWEEN %d AND %d", t.qualified(), from, to)
				if _, err := conn.Exec(ctx, sql); err != nil {
					return 0, fmt.Errorf("update rows %d to %d: %w", from, to, err)
				}
			}
			return n, nil
		}},
		"stream-mixed": {table: newTable("stream-mixed", narrow), seed: mixedSeed(n), write: func(ctx context.Context, conn *pgx.Conn, t table) (int, error) {
			return writeMixed(ctx, conn, t, n, per)
		}},
		"stream-wide": {table: newTable("stream-wide", wide), write: inserts(o.wideRows)},
		"big-txn": {table: newTable("big-txn", narrow), write: func(ctx context.Context, conn *pgx.Conn, t table) (int, error) {
			return n, t.insertRows(ctx, conn, 1, n)
		}},
	}
}

// mixedSeed is the number of rows stream-mixed updates and deletes: updates
// take ids from 1 upwards, deletes from mixedSeed downwards, and together
// they touch at most 40% of the changes (plus rounding).
func mixedSeed(changes int) int { return changes/2 + 10 }

// writeMixed makes n changes in transactions of per changes: 60% inserts of
// new rows, 30% updates and 10% deletes of seeded rows, each transaction
// one round trip.
func writeMixed(ctx context.Context, conn *pgx.Conn, t table, n, per int) (int, error) {
	nextInsert, nextUpdate, nextDelete := mixedSeed(n)+1, 1, mixedSeed(n)
	for done := 0; done < n; {
		k := min(per, n-done)
		ins, upd := k*6/10, k*3/10
		del := k - ins - upd
		sql := "BEGIN;" +
			fmt.Sprintf(t.insert, t.qualified(), nextInsert, nextInsert+ins-1) + ";" +
			fmt.Sprintf("UPDATE %s SET amount = amount + 1, updated_at = updated_at + interval '1 day' WHERE id BETWEEN %d AND %d;", t.qualified(), nextUpdate, nextUpdate+upd-1) +
			fmt.Sprintf("DELETE FROM %s WHERE id BETWEEN %d AND %d;", t.qualified(), nextDelete-del+1, nextDelete) +
			"COMMIT"
		if _, err := conn.Exec(ctx, sql); err != nil {
			return 0, fmt.Errorf("mixed transaction after %d changes: %w", done, err)
		}
		nextInsert += ins
		nextUpdate += upd
		nextDelete -= del
		done += k
	}
	return n, nil
}
