package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statefeed/statefeed/cdc"
)

// chunkKey is the key a table is read in: its columns, in index order, and
// the SQL types to cast their text values to.
type chunkKey struct {
	cols  []string
	types []string
}

// Querier is what table inspection needs: *pgx.Conn and *pgxpool.Pool have it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// findChunkKey picks the unique index a table is read in: one whose
// columns are NOT NULL, without expressions or a predicate, and whose
// columns the replication stream carries in the old row of an update or a
// delete, so that a change can be matched to a chunk's row. That is the
// replica identity index, or the primary key under the default replica
// identity, or any such index under REPLICA IDENTITY FULL, the one with the
// mapping's key columns first. An error says what the DBA can do.
func findChunkKey(ctx context.Context, db Querier, table cdc.TableName, mappingKey []string) (chunkKey, error) {
	rows, err := db.Query(ctx, `
SELECT i.indisprimary, i.indisreplident, c.relreplident::text,
       array_agg(a.attname::text ORDER BY k.ord),
       array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY k.ord),
       bool_and(a.attnotnull)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indisvalid AND i.indislive
  AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
GROUP BY i.indexrelid, i.indisprimary, i.indisreplident, c.relreplident
ORDER BY i.indisprimary DESC, count(*), i.indexrelid`, table.Quoted())
	if err != nil {
		return chunkKey{}, fmt.Errorf("backfill %s: read its indexes: %w", table, err)
	}
	type index struct {
		primary, ident bool
		replident      string
		cols, types    []string
		notNull        bool
	}
	var idx []index
	for rows.Next() {
		var x index
		if err := rows.Scan(&x.primary, &x.ident, &x.replident, &x.cols, &x.types, &x.notNull); err != nil {
			rows.Close()
			return chunkKey{}, fmt.Errorf("backfill %s: read its indexes: %w", table, err)
		}
		idx = append(idx, x)
	}
	if err := rows.Err(); err != nil {
		return chunkKey{}, fmt.Errorf("backfill %s: read its indexes: %w", table, err)
	}
	usable := func(x index) bool {
		if !x.notNull {
			return false
		}
		switch x.replident {
		case "i":
			return x.ident
		case "d":
			return x.primary
		case "f":
			return true
		}
		return false
	}
	best := -1
	for i, x := range idx {
		if !usable(x) {
			continue
		}
		if best < 0 || (sameSet(x.cols, mappingKey) && !sameSet(idx[best].cols, mappingKey) && !idx[best].primary) {
			best = i
		}
	}
	if best < 0 {
		return chunkKey{}, fmt.Errorf("backfill %s: the table has no primary key, and no unique index on NOT NULL columns that is its replica identity; "+
			"a backfill reads a table in key order and must match the stream's changes to the rows it read. "+
			"Add a primary key, or a unique index on the mapping's key (%s) with NOT NULL columns and make it the replica identity: "+
			"ALTER TABLE %s REPLICA IDENTITY USING INDEX <index>",
			table, strings.Join(mappingKey, ", "), table.Quoted())
	}
	return chunkKey{cols: idx[best].cols, types: idx[best].types}, nil
}

// ChunkKey returns the columns a backfill reads table in, or an error
// saying why it cannot read it and what to do.
func ChunkKey(ctx context.Context, db Querier, table cdc.TableName, mappingKey []string) ([]string, error) {
	k, err := findChunkKey(ctx, db, table, mappingKey)
	return k.cols, err
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

// estimateRows returns the planner's estimate of the table's rows, 0 when
// it has none.
func estimateRows(ctx context.Context, db Querier, table cdc.TableName) (int64, error) {
	var n float64
	if err := db.QueryRow(ctx, "SELECT reltuples::float8 FROM pg_catalog.pg_class WHERE oid = $1::regclass", table.Quoted()).Scan(&n); err != nil {
		return 0, fmt.Errorf("backfill %s: estimate its rows: %w", table, err)
	}
	return max(int64(n), 0), nil
}

// planRanges splits a table of about rows rows into at most parts ranges
// of its first key column, at the bounds of the column's histogram in
// pg_stats. Without statistics, or for a small table, it is one range.
func planRanges(ctx context.Context, db Querier, table cdc.TableName, key chunkKey, rows int64, parts, chunk int) ([]*Range, error) {
	one := []*Range{{}}
	parts = min(parts, int(rows/int64(4*chunk)))
	if parts < 2 {
		return one, nil
	}
	var bounds *string
	err := db.QueryRow(ctx, "SELECT histogram_bounds::text FROM pg_catalog.pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3",
		table.Schema, table.Name, key.cols[0]).Scan(&bounds)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && bounds == nil) {
		return one, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backfill %s: read statistics of %s: %w", table, key.cols[0], err)
	}
	elems, err := cdc.ParseArray([]byte(*bounds), ',')
	if err != nil || len(elems) < parts+1 {
		return one, nil
	}
	var cuts []string
	for i := 1; i < parts; i++ {
		e := elems[i*(len(elems)-1)/parts]
		if e.Null || (len(cuts) > 0 && cuts[len(cuts)-1] == string(e.Text)) {
			continue
		}
		cuts = append(cuts, string(e.Text))
	}
	ranges := make([]*Range, 0, len(cuts)+1)
	var from *string
	for _, c := range cuts {
		ranges = append(ranges, &Range{From: from, To: &c})
		from = &c
	}
	return append(ranges, &Range{From: from}), nil
}

// chunkRow is one row of a chunk, in text format, by column position.
type chunkRow []cdc.Value

// chunk reads are single statements: each is its own short transaction,
// holding an ACCESS SHARE lock on the table while it runs and nothing after.
type chunkReader struct {
	table cdc.TableName
	key   chunkKey
	rel   *cdc.Relation // the shape of the last chunk read
	keyAt []int         // positions of the key columns in rel

	// The space of the last chunk's rows, reused by the next.
	rows  []chunkRow
	cells []cdc.Value
	bytes blocks
}

// blocks hands out byte space from large blocks that are kept and reused
// after reset.
type blocks struct {
	list [][]byte
	cur  int
}

func (b *blocks) reset() {
	b.cur = 0
	if len(b.list) > 0 {
		b.list[0] = b.list[0][:0]
	}
}

// add copies v into the blocks and returns the copy.
func (b *blocks) add(v []byte) []byte {
	if len(b.list) == 0 {
		b.list = append(b.list, make([]byte, 0, max(arenaBlock, len(v))))
	}
	blk := b.list[b.cur]
	if cap(blk)-len(blk) < len(v) {
		b.cur++
		switch {
		case b.cur == len(b.list):
			b.list = append(b.list, make([]byte, 0, max(arenaBlock, len(v))))
		case cap(b.list[b.cur]) < len(v):
			b.list[b.cur] = make([]byte, 0, len(v))
		}
		blk = b.list[b.cur][:0]
	}
	start := len(blk)
	blk = append(blk, v...)
	b.list[b.cur] = blk
	return blk[start:len(blk):len(blk)]
}

// query returns the statement that reads the next chunk of r after after.
func (cr *chunkReader) query(r *Range, after []string, limit int) (string, [][]byte) {
	var where []string
	var params [][]byte
	param := func(v string, typ string) string {
		params = append(params, []byte(v))
		return fmt.Sprintf("$%d::%s", len(params), typ)
	}
	cols := make([]string, len(cr.key.cols))
	for i, c := range cr.key.cols {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	if after != nil {
		vals := make([]string, len(after))
		for i, v := range after {
			vals[i] = param(v, cr.key.types[i])
		}
		where = append(where, "("+strings.Join(cols, ", ")+") > ("+strings.Join(vals, ", ")+")")
	}
	if r.From != nil {
		where = append(where, cols[0]+" >= "+param(*r.From, cr.key.types[0]))
	}
	if r.To != nil {
		where = append(where, cols[0]+" < "+param(*r.To, cr.key.types[0]))
	}
	var b strings.Builder
	b.WriteString("SELECT * FROM ")
	b.WriteString(cr.table.Quoted())
	if len(where) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(where, " AND "))
	}
	fmt.Fprintf(&b, " ORDER BY %s LIMIT %d", strings.Join(cols, ", "), limit)
	return b.String(), params
}

// read reads up to limit rows of r after the key after (nil: from the
// range's start), in key order. It returns the rows, with the relation
// they are shaped by, and the key of the last one.
func (cr *chunkReader) read(ctx context.Context, pool *pgxpool.Pool, r *Range, after []string, limit int) (*cdc.Relation, []chunkRow, []string, error) {
	sql, params := cr.query(r, after, limit)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	defer conn.Release()
	rr := conn.Conn().PgConn().ExecParams(ctx, sql, params, nil, nil, nil)
	rel, err := cr.relation(rr.FieldDescriptions())
	if err != nil {
		rr.Close()
		return nil, nil, nil, err
	}
	// The rows of the previous chunk were projected and are dropped:
	// their space is reused.
	rows, cells := cr.rows[:0], cr.cells[:0]
	cr.bytes.reset()
	for rr.NextRow() {
		vals := rr.Values()
		if cap(cells)-len(cells) < len(vals) {
			cells = make([]cdc.Value, 0, max(2*cap(cells), 256*len(vals)))
		}
		start := len(cells)
		cells = cells[:start+len(vals)]
		row := chunkRow(cells[start:len(cells):len(cells)])
		for i, v := range vals {
			if v == nil {
				row[i] = cdc.Value{Kind: cdc.Null}
				continue
			}
			row[i] = cdc.Value{Kind: cdc.Text, Text: cr.bytes.add(v)}
		}
		rows = append(rows, row)
	}
	cr.rows, cr.cells = rows, cells
	if _, err := rr.Close(); err != nil {
		return nil, nil, nil, err
	}
	if len(rows) == 0 {
		return rel, nil, after, nil
	}
	last := rows[len(rows)-1]
	next := make([]string, len(cr.keyAt))
	for i, at := range cr.keyAt {
		next[i] = string(last[at].Text)
	}
	return rel, rows, next, nil
}

// relation returns the Relation of a result's columns, the same pointer as
// long as the shape does not change.
func (cr *chunkReader) relation(fds []pgconn.FieldDescription) (*cdc.Relation, error) {
	if cr.rel != nil && len(cr.rel.Columns) == len(fds) {
		same := true
		for i, fd := range fds {
			c := cr.rel.Columns[i]
			if c.Name != fd.Name || c.TypeOID != fd.DataTypeOID || c.TypeMod != fd.TypeModifier {
				same = false
				break
			}
		}
		if same {
			return cr.rel, nil
		}
	}
	rel := &cdc.Relation{Table: cr.table, ReplicaIdentity: 'd', Columns: make([]cdc.Column, len(fds))}
	for i, fd := range fds {
		rel.Columns[i] = cdc.Column{Name: fd.Name, TypeOID: fd.DataTypeOID, TypeMod: fd.TypeModifier}
	}
	keyAt := make([]int, len(cr.key.cols))
	for i, c := range cr.key.cols {
		if keyAt[i] = rel.ColumnIndex(c); keyAt[i] < 0 {
			return nil, fmt.Errorf("backfill %s: key column %q is not in the result", cr.table, c)
		}
		rel.Columns[keyAt[i]].Identity = true
	}
	cr.rel, cr.keyAt = rel, keyAt
	return rel, nil
}

// identity encodes the values of a row at the given positions as one
// string, unambiguously: each value is prefixed with its length. ok is
// false when a value is missing (an unchanged TOASTed key column).
func identity(row []cdc.Value, at []int) (id string, ok bool) {
	b, ok := appendIdentity(nil, row, at)
	return string(b), ok
}

// appendIdentity appends the identity of row to dst.
func appendIdentity(dst []byte, row []cdc.Value, at []int) ([]byte, bool) {
	for _, i := range at {
		if i >= len(row) || row[i].Kind != cdc.Text {
			return dst, false
		}
		dst = strconv.AppendInt(dst, int64(len(row[i].Text)), 10)
		dst = append(dst, ':')
		dst = append(dst, row[i].Text...)
	}
	return dst, true
}

// arenaBlock is the size of the blocks a chunk's bytes are kept in.
const arenaBlock = 256 << 10

// room returns buf, or a new block when buf has less than n bytes free.
// Slices of the old block stay valid: a block is never grown.
func room(buf []byte, n int) []byte {
	if cap(buf)-len(buf) >= n {
		return buf
	}
	return make([]byte, 0, max(arenaBlock, n))
}
