package cdc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// textFormat are the session settings that decide how values are written
// in text format. pgoutput writes values with the settings of the
// replication session, so every session that reads values back must use
// the same ones for a value to read back byte for byte as it streamed.
var textFormat = map[string]string{
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"TimeZone":           "UTC",
	"extra_float_digits": "1",
	"bytea_output":       "hex",
}

// SetTextFormat adds to params (a connection's RuntimeParams) the session
// settings that Source uses, so that values read on that connection are
// written exactly as the replication stream writes them. Apply it to the
// configuration of the pool given to NewRowReader:
//
//	cfg, _ := pgxpool.ParseConfig(dsn)
//	cdc.SetTextFormat(cfg.ConnConfig.RuntimeParams)
func SetTextFormat(params map[string]string) {
	for k, v := range textFormat {
		params[k] = v
	}
}

// RowReader reads rows back from the source, for values the stream did not
// carry (unchanged TOAST). Each read is one statement in its own implicit
// transaction, so it holds an ACCESS SHARE lock for the duration of one
// index lookup. It is safe for concurrent use; the caller owns the pool.
type RowReader struct {
	pool *pgxpool.Pool

	mu sync.Mutex
	// stmts holds the statements of the current shape of each relation,
	// by relation ID: a schema change replaces them rather than adding to
	// them, so the cache does not grow with schema changes.
	stmts map[uint32]relStatements
}

type relStatements struct {
	rel   *Relation
	stmts []*rowStatement
}

type rowStatement struct {
	by   []int
	cols []int
	name string
	sql  string
}

// NewRowReader returns a RowReader that reads through pool. The pool's
// connections must carry the settings of SetTextFormat.
func NewRowReader(pool *pgxpool.Pool) *RowReader {
	return &RowReader{pool: pool, stmts: make(map[uint32]relStatements)}
}

// ReadRow reads the current row of rel whose columns at positions by equal
// the values of row at the same positions (which must be Text). It reads
// the columns at positions cols (every column of rel when cols is nil) and
// returns a row of len(rel.Columns) values in rel's order: those read in
// text format as pgoutput would send them, with NULL as Null, the others
// Absent; found is false when no row matches. The values of cur are copies
// owned by the caller.
//
// Read only the columns you need: rel is the table's shape when the change
// was written, and a column dropped or renamed since then cannot be read.
func (r *RowReader) ReadRow(ctx context.Context, rel *Relation, by, cols []int, row []Value) (cur []Value, found bool, err error) {
	if len(by) == 0 {
		return nil, false, fmt.Errorf("read row of %s: no key columns", rel.Table)
	}
	if cols == nil {
		cols = make([]int, len(rel.Columns))
		for i := range cols {
			cols[i] = i
		}
	}
	for _, pos := range cols {
		if pos < 0 || pos >= len(rel.Columns) {
			return nil, false, fmt.Errorf("read row of %s: column position %d out of range", rel.Table, pos)
		}
	}
	params := make([][]byte, len(by))
	for i, pos := range by {
		if pos < 0 || pos >= len(rel.Columns) || pos >= len(row) {
			return nil, false, fmt.Errorf("read row of %s: key column position %d out of range", rel.Table, pos)
		}
		if row[pos].Kind != Text {
			return nil, false, fmt.Errorf("read row of %s: key column %q has no value to look up (kind %d)", rel.Table, rel.Columns[pos].Name, row[pos].Kind)
		}
		params[i] = row[pos].Text
	}
	st := r.statement(rel, by, cols)

	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("read row of %s: %w", rel.Table, err)
	}
	defer conn.Release()
	// Prepare is idempotent for the same name and SQL on a connection.
	if _, err := conn.Conn().Prepare(ctx, st.name, st.sql); err != nil {
		return nil, false, fmt.Errorf("read row of %s: prepare: %w", rel.Table, err)
	}
	// Text parameters and text results: the server converts, exactly as
	// for the stream.
	rr := conn.Conn().PgConn().ExecPrepared(ctx, st.name, params, nil, nil)
	rows := 0
	for rr.NextRow() {
		rows++
		if rows > 1 {
			continue
		}
		vals := rr.Values()
		if len(vals) != len(cols) {
			continue
		}
		size := 0
		for _, v := range vals {
			size += len(v)
		}
		buf := make([]byte, 0, size)
		cur = make([]Value, len(rel.Columns))
		for j, v := range vals {
			i := cols[j]
			if v == nil {
				cur[i].Kind = Null
				continue
			}
			start := len(buf)
			buf = append(buf, v...)
			cur[i] = Value{Kind: Text, Text: buf[start:len(buf):len(buf)]}
		}
	}
	if _, err := rr.Close(); err != nil {
		return nil, false, fmt.Errorf("read row of %s: %w", rel.Table, err)
	}
	switch {
	case rows == 0:
		return nil, false, nil
	case rows > 1:
		return nil, false, fmt.Errorf("read row of %s: %d rows match %s; the key is not unique", rel.Table, rows, keyNames(rel, by))
	case cur == nil:
		return nil, false, fmt.Errorf("read row of %s: the table's columns no longer match the relation", rel.Table)
	}
	return cur, true, nil
}

// statement returns the query for rel, by and cols, building it once per
// relation pointer, key and column list.
func (r *RowReader) statement(rel *Relation, by, cols []int) *rowStatement {
	r.mu.Lock()
	defer r.mu.Unlock()
	cached := r.stmts[rel.ID]
	if cached.rel != rel {
		cached = relStatements{rel: rel}
	}
	for _, st := range cached.stmts {
		if slices.Equal(st.by, by) && slices.Equal(st.cols, cols) {
			return st
		}
	}
	names := make([]string, len(rel.Columns))
	for i, c := range rel.Columns {
		names[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	sel := make([]string, len(cols))
	for j, pos := range cols {
		sel[j] = names[pos]
	}
	var where strings.Builder
	for i, pos := range by {
		if i > 0 {
			where.WriteString(" AND ")
		}
		fmt.Fprintf(&where, "%s = $%d", names[pos], i+1)
	}
	sql := fmt.Sprintf("SELECT %s FROM %s WHERE %s", strings.Join(sel, ", "), rel.Table.Quoted(), where.String())

	// The name covers the column types too: after ALTER COLUMN ... TYPE the
	// SQL is the same but a statement prepared before would fail with
	// "cached plan must not change result type".
	h := sha256.New()
	h.Write([]byte(sql))
	for _, c := range rel.Columns {
		h.Write(binary.BigEndian.AppendUint32(nil, c.TypeOID))
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(c.TypeMod)))
	}
	st := &rowStatement{by: slices.Clone(by), cols: slices.Clone(cols), name: "statefeed_row_" + hex.EncodeToString(h.Sum(nil)[:12]), sql: sql}
	cached.stmts = append(cached.stmts, st)
	r.stmts[rel.ID] = cached
	return st
}

func keyNames(rel *Relation, by []int) string {
	names := make([]string, len(by))
	for i, pos := range by {
		names[i] = rel.Columns[pos].Name
	}
	return strings.Join(names, ", ")
}
