package mapping

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/statefeed/statefeed/cdc"
)

// Record is one Kafka record a change projects to. Record owns its bytes.
type Record struct {
	Topic  string
	Entity string
	Key    []byte // never empty or nil: a NULL key column is an error
	Value  []byte // nil = tombstone
}

// RowReader reads the current row back from the source; the only database
// access of projection.
type RowReader interface {
	// ReadRow returns the current row of rel's table whose columns at
	// positions by equal row's values at those positions, or found=false
	// when no such row exists. cur has len(rel.Columns) values in rel's
	// order: the columns at positions cols are read, the others are
	// Absent. Only the columns the mappings need are asked for: a column
	// dropped or renamed since the change cannot be read.
	ReadRow(ctx context.Context, rel *cdc.Relation, by, cols []int, row []cdc.Value) (cur []cdc.Value, found bool, err error)
}

// Projector turns changes into records. It binds mappings to relations as
// they appear on the stream and keeps reusable buffers, so it is not safe
// for concurrent use: give each stream its own Projector.
type Projector struct {
	set  *Set
	rels map[uint32]*boundRel
	vm   vm.VM
	sc   scratch
	buf  []byte // the value being rendered
	kbuf []byte // the new key of the change being projected
	env  map[string]any
	dec  []any  // decoded values of the current row, by column position
	have []bool // which of dec are set
	read readBack
}

// readBack remembers the row read back for the change being projected, so
// mappings sharing a table read it once.
type readBack struct {
	done  bool
	by    []int
	cur   []cdc.Value
	found bool
}

// NewProjector returns a projector for a checked Set.
func NewProjector(s *Set) *Projector {
	return &Projector{set: s, rels: make(map[uint32]*boundRel), env: make(map[string]any)}
}

type boundRel struct {
	rel  *cdc.Relation
	maps []*bound
}

// bound is a mapping bound to the column positions of one relation.
type bound struct {
	m       *Mapping
	rel     *cdc.Relation
	key     []int
	keyType []*colType
	readBy  []int
	// readCols are the positions a read-back reads: what every mapping of
	// the table needs, its primary key and readBy, in column order.
	readCols []int
	pk       []int // primary key positions, for error messages; may be empty
	needed   []int // every position the mapping reads
	leaves   []leaf
	suffix   []byte
	filter   *boundExpr
}

type leaf struct {
	prefix []byte
	path   string   // YAML path of the field
	col    int      // column position, or -1 for an expression
	typ    *colType // column renderer
	expr   *boundExpr
}

type boundExpr struct {
	field   *Field
	program *vm.Program
	cols    []int
	names   []string
}

// bind resolves a mapping's columns in rel by name.
func (m *Mapping) bind(rel *cdc.Relation) (*bound, error) {
	if m.c == nil {
		return nil, fmt.Errorf("mapping %s: not checked against the catalog; call Set.Check first", m.File)
	}
	b := &bound{m: m, rel: rel}
	pos := func(path, col string) (int, error) {
		i := rel.ColumnIndex(col)
		if i < 0 {
			return 0, fmt.Errorf("mapping %s: %s: column %q no longer exists in table %s (dropped or renamed while the bridge was running); update the mapping and restart the bridge — the slot was not confirmed past this change", m.File, path, col, rel.Table)
		}
		if !slices.Contains(b.needed, i) {
			b.needed = append(b.needed, i)
		}
		return i, nil
	}
	bindExpr := func(f *Field) (*boundExpr, error) {
		e := &boundExpr{field: f, program: f.program}
		names := f.columns
		if f.allColumns {
			names = nil
			for _, c := range rel.Columns {
				names = append(names, c.Name)
			}
		}
		for _, name := range names {
			i, err := pos(f.Path, name)
			if err != nil {
				return nil, err
			}
			if oid, ok := m.c.colOID[name]; ok && oid != rel.Columns[i].TypeOID {
				return nil, fmt.Errorf("mapping %s: %s: column %q of table %s changed type while the bridge was running, and the expression was checked against the old type; restart the bridge to check it again — the slot was not confirmed past this change", m.File, f.Path, name, rel.Table)
			}
			e.cols = append(e.cols, i)
			e.names = append(e.names, name)
		}
		return e, nil
	}
	for _, col := range m.Key {
		i, err := pos("key", col)
		if err != nil {
			return nil, err
		}
		b.key = append(b.key, i)
		b.keyType = append(b.keyType, typeFor(rel.Columns[i].TypeOID, m.c.colType[col]))
	}
	for _, col := range m.c.readBy {
		i, err := pos("key", col)
		if err != nil {
			return nil, err
		}
		b.readBy = append(b.readBy, i)
	}
	for _, col := range m.c.table.PrimaryKey {
		if i := rel.ColumnIndex(col); i >= 0 {
			b.pk = append(b.pk, i)
		}
	}
	if m.c.filter != nil {
		e, err := bindExpr(m.c.filter)
		if err != nil {
			return nil, err
		}
		b.filter = e
	}
	for _, s := range m.c.renderSpec {
		if s.field == nil {
			b.suffix = s.prefix
			continue
		}
		l := leaf{prefix: s.prefix, path: s.field.Path, col: -1}
		if s.field.Column != "" {
			i, err := pos(s.field.Path, s.field.Column)
			if err != nil {
				return nil, err
			}
			l.col = i
			l.typ = typeFor(rel.Columns[i].TypeOID, m.c.colType[s.field.Column])
		} else {
			e, err := bindExpr(s.field)
			if err != nil {
				return nil, err
			}
			l.expr = e
		}
		b.leaves = append(b.leaves, l)
	}
	return b, nil
}

// binding returns the mappings bound to rel, binding them the first time
// a relation pointer is seen (a new pointer for an ID is a schema change).
func (p *Projector) binding(rel *cdc.Relation) (*boundRel, error) {
	if br, ok := p.rels[rel.ID]; ok {
		if br.rel == rel {
			return br, nil
		}
		// A renamed table stays in the publication: its changes would
		// otherwise pass as those of an unmapped table, silently.
		if br.rel.Table != rel.Table && len(br.maps) > 0 {
			return nil, renamed(br.maps[0].m, br.rel.Table, rel.Table)
		}
	}
	// The same when the first change of a renamed table since start-up
	// arrives under its new name: the relation ID is the table's OID,
	// which the catalog gave at start-up.
	if len(p.set.byTable[rel.Table]) == 0 {
		for _, m := range p.set.Mappings {
			if m.c != nil && m.c.table.OID != 0 && m.c.table.OID == rel.ID {
				return nil, renamed(m, m.Table, rel.Table)
			}
		}
	}
	br := &boundRel{rel: rel}
	for _, m := range p.set.byTable[rel.Table] {
		b, err := m.bind(rel)
		if err != nil {
			return nil, err
		}
		br.maps = append(br.maps, b)
	}
	var cols []int
	for _, b := range br.maps {
		cols = append(cols, b.needed...)
		cols = append(cols, b.pk...)
		cols = append(cols, b.readBy...)
	}
	slices.Sort(cols)
	cols = slices.Compact(cols)
	for _, b := range br.maps {
		b.readCols = cols
	}
	p.rels[rel.ID] = br
	return br, nil
}

// Project appends to out the records change c projects to, for every
// mapping of its table, and returns the extended slice. Begin, Commit and
// changes of unmapped tables project to nothing. rr is called only when
// the change lacks a value a mapping needs (unchanged TOAST). An error
// means the change cannot be published: the caller must stop without
// confirming its LSN. Records appended before an error should be dropped.
func (p *Projector) Project(ctx context.Context, c *cdc.Change, rr RowReader, out []Record) ([]Record, error) {
	switch c.Op {
	case cdc.Truncate:
		for _, rel := range c.Truncated {
			for _, m := range p.set.byTable[rel.Table] {
				if m.OnTruncate == TruncateFail {
					return out, &TruncateError{Table: rel.Table, File: m.File, Topic: m.Topic, LSN: lsnOf(c)}
				}
			}
		}
		return out, nil
	case cdc.Insert, cdc.Update, cdc.Delete:
	default:
		return out, nil
	}
	if c.Relation == nil {
		return out, fmt.Errorf("%s change without a relation", c.Op)
	}
	br, err := p.binding(c.Relation)
	if err != nil {
		return out, err
	}
	p.read = readBack{}
	for _, b := range br.maps {
		if c.Op == cdc.Delete {
			out, err = p.delete(b, c, out)
		} else {
			out, err = p.upsert(ctx, b, c, rr, out)
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func lsnOf(c *cdc.Change) string {
	if c.Tx == nil {
		return ""
	}
	return c.Tx.CommitLSN.String()
}

// carries reports whether row holds a value (or NULL) at every position.
func carries(row []cdc.Value, at []int) bool {
	for _, i := range at {
		if i >= len(row) || (row[i].Kind != cdc.Text && row[i].Kind != cdc.Null) {
			return false
		}
	}
	return true
}

func (p *Projector) delete(b *bound, c *cdc.Change, out []Record) ([]Record, error) {
	old := c.Old
	if old == nil || !carries(old, b.key) {
		return out, b.rowError(c, old, "key", errors.New("the delete did not carry the key columns; the table's replica identity must include them (ALTER TABLE ... REPLICA IDENTITY FULL)"))
	}
	if b.keyless(old) {
		return out, nil // a row without a key was never published
	}
	if b.filter != nil && carries(old, b.filter.cols) {
		in, err := p.filterIn(b, c, old)
		if err != nil {
			return out, err
		}
		if !in {
			return out, nil // the row was outside the filter: nothing was published for it
		}
	}
	key, err := p.renderKey(b, c, old)
	if err != nil {
		return out, err
	}
	return p.emit(b, key, nil, out), nil
}

func (p *Projector) upsert(ctx context.Context, b *bound, c *cdc.Change, rr RowReader, out []Record) ([]Record, error) {
	row, old := c.New, c.Old
	if c.Op == cdc.Insert {
		old = nil
	}
	// The old key, when the old row says it: only then can the key have
	// changed. A row with a NULL key was never published (that is an
	// error), so it has no key to tombstone.
	var oldKey []byte
	if old != nil && carries(old, b.key) && !b.keyless(old) {
		k, err := p.renderKey(b, c, old)
		if err != nil {
			return out, err
		}
		oldKey = bytes.Clone(k)
	}
	// Precise filter transitions need the old row's filter columns. An
	// insert has no old row: it was "out" before.
	precise, oldIn := c.Op == cdc.Insert, false
	if b.filter != nil && old != nil && carries(old, b.filter.cols) {
		in, err := p.filterIn(b, c, old)
		if err != nil {
			return out, err
		}
		precise, oldIn = true, in
	}
	if b.filter == nil && old != nil {
		precise, oldIn = true, true
	}

	if p.lacks(b, row) {
		if rr == nil {
			return out, b.rowError(c, row, "", errors.New("the change lacks an unchanged TOAST value and no RowReader was given to read it back"))
		}
		by := p.byValues(b, row, old)
		cur, found := p.read.cur, p.read.found
		if !p.read.done || !slices.Equal(p.read.by, b.readBy) {
			var err error
			cur, found, err = rr.ReadRow(ctx, c.Relation, b.readBy, b.readCols, by)
			if err != nil {
				hint := ""
				var se interface{ SQLState() string }
				if errors.As(err, &se) && se.SQLState() == "42703" { // undefined_column
					hint = " (a column the mapping reads was dropped or renamed after this change; update the mapping and restart the bridge — the slot was not confirmed past this change)"
				}
				return out, fmt.Errorf("mapping %s: read back the current row of %s for a value the WAL did not carry: %w%s", b.m.File, c.Relation.Table, err, hint)
			}
			p.read = readBack{done: true, by: b.readBy, cur: cur, found: found}
		}
		if !found {
			// The row is gone by now; a later change in the stream says
			// so too. Only tombstones are certain.
			keyRow := mergeUnchanged(row, old)
			if b.keyless(keyRow) {
				if oldKey != nil {
					out = p.emit(b, oldKey, nil, out)
				}
				return out, nil
			}
			newKey, err := p.renderKey(b, c, keyRow)
			if err != nil {
				return out, err
			}
			if oldKey != nil && !bytes.Equal(oldKey, newKey) {
				out = p.emit(b, oldKey, nil, out)
			}
			return p.emit(b, newKey, nil, out), nil
		}
		if len(cur) != len(c.Relation.Columns) || p.lacks(b, cur) {
			return out, fmt.Errorf("mapping %s: the row read back from %s does not have the relation's %d columns", b.m.File, c.Relation.Table, len(c.Relation.Columns))
		}
		row = cur
	}

	newIn := true
	if b.filter != nil {
		var err error
		if newIn, err = p.filterIn(b, c, row); err != nil {
			return out, err
		}
	}
	if !newIn && b.keyless(row) {
		// Outside the filter and without a key: nothing is published
		// under a NULL key, only the old key may need its tombstone.
		if oldKey != nil && (!precise || oldIn) {
			out = p.emit(b, oldKey, nil, out)
		}
		return out, nil
	}
	newKey, err := p.renderKey(b, c, row)
	if err != nil {
		return out, err
	}
	// renderValue reuses p.buf: keep the key apart.
	p.kbuf = append(p.kbuf[:0], newKey...)
	newKey = p.kbuf
	keyChanged := oldKey != nil && !bytes.Equal(oldKey, newKey)
	if keyChanged && (!precise || oldIn) {
		out = p.emit(b, oldKey, nil, out)
	}
	switch {
	case newIn:
		value, err := p.renderValue(b, c, row)
		if err != nil {
			return out, err
		}
		return p.emit(b, newKey, value, out), nil
	case !precise || (oldIn && !keyChanged):
		return p.emit(b, newKey, nil, out), nil
	}
	return out, nil
}

// keyless reports whether row has no usable key: a key column is NULL, or
// the only key column is empty text (char(n) blanks included), which
// Kafka cannot key a compacted record by.
func (b *bound) keyless(row []cdc.Value) bool {
	for _, i := range b.key {
		if i < len(row) && row[i].Kind == cdc.Null {
			return true
		}
	}
	if len(b.key) == 1 {
		v := row[b.key[0]]
		text := v.Text
		if b.keyType[0].kind == kindBpchar {
			text = cdc.TrimPad(text)
		}
		return v.Kind == cdc.Text && len(text) == 0
	}
	return false
}

// lacks reports whether row misses a value the mapping needs.
func (p *Projector) lacks(b *bound, row []cdc.Value) bool {
	for _, i := range b.needed {
		if i >= len(row) || row[i].Kind == cdc.Unchanged || row[i].Kind == cdc.Absent {
			return true
		}
	}
	return false
}

// byValues is row with the values that identify it for RowReader filled
// from the old row when the new one did not carry them.
func (p *Projector) byValues(b *bound, row, old []cdc.Value) []cdc.Value {
	if carries(row, b.readBy) {
		return row
	}
	return mergeUnchanged(row, old)
}

// mergeUnchanged returns row with its unsent values taken from old: an
// unchanged value is the old one.
func mergeUnchanged(row, old []cdc.Value) []cdc.Value {
	if old == nil {
		return row
	}
	merged := make([]cdc.Value, len(row))
	copy(merged, row)
	for i := range merged {
		if merged[i].Kind == cdc.Unchanged && i < len(old) && old[i].Kind == cdc.Text {
			merged[i] = old[i]
		}
	}
	return merged
}

// emit appends a record whose bytes are a fresh copy of key and value.
func (p *Projector) emit(b *bound, key, value []byte, out []Record) []Record {
	// Join copies both into one new array that, unlike one from make, is
	// not zeroed first: the value is most of a record's bytes.
	buf := bytes.Join([][]byte{key, value}, nil)
	r := Record{Topic: b.m.Topic, Entity: b.m.Entity, Key: buf[:len(key):len(key)]}
	if value != nil {
		r.Value = buf[len(key):]
	}
	return append(out, r)
}

// renderKey renders row's key into p.buf, valid until the next render.
func (p *Projector) renderKey(b *bound, c *cdc.Change, row []cdc.Value) ([]byte, error) {
	buf, err := b.appendKey(p.buf[:0], row, &p.sc)
	p.buf = buf
	if err != nil {
		return nil, b.rowError(c, row, "key", err)
	}
	return buf, nil
}

func (b *bound) appendKey(dst []byte, row []cdc.Value, sc *scratch) ([]byte, error) {
	if len(b.key) == 1 {
		v := row[b.key[0]]
		if v.Kind != cdc.Text {
			return dst, fmt.Errorf("key column %q is NULL; a key column must never be NULL (add a NOT NULL constraint, or filter such rows out)", b.rel.Columns[b.key[0]].Name)
		}
		start := len(dst)
		dst, err := b.keyType[0].appendKey(dst, v.Text, sc)
		if err == nil && len(dst) == start {
			name := b.rel.Columns[b.key[0]].Name
			err = fmt.Errorf("key column %q is empty, and Kafka cannot key a compacted record by an empty key; give such rows a key, or filter them out (filter: %s != '')", name, name)
		}
		return dst, err
	}
	dst = append(dst, '[')
	for j, i := range b.key {
		if j > 0 {
			dst = append(dst, ',')
		}
		v := row[i]
		if v.Kind != cdc.Text {
			return dst, fmt.Errorf("key column %q is NULL; a key column must never be NULL (add a NOT NULL constraint, or filter such rows out)", b.rel.Columns[i].Name)
		}
		var err error
		if dst, err = b.keyType[j].appendJSON(dst, v.Text, sc); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

// renderValue renders row's document into p.buf, valid until the next
// render.
func (p *Projector) renderValue(b *bound, c *cdc.Change, row []cdc.Value) ([]byte, error) {
	p.resetRow(len(row))
	buf := p.buf[:0]
	for _, l := range b.leaves {
		buf = append(buf, l.prefix...)
		if l.expr == nil {
			v := row[l.col]
			if v.Kind != cdc.Text {
				buf = append(buf, "null"...)
				continue
			}
			var err error
			if buf, err = l.typ.appendJSON(buf, v.Text, &p.sc); err != nil {
				p.buf = buf
				return nil, b.rowError(c, row, l.path, err)
			}
			continue
		}
		res, err := p.eval(b, c, l.expr, row)
		if err != nil {
			p.buf = buf
			return nil, err
		}
		if buf, err = appendValue(buf, res, &p.sc); err != nil {
			p.buf = buf
			return nil, b.rowError(c, row, l.path, err)
		}
	}
	buf = append(buf, b.suffix...)
	p.buf = buf
	return buf, nil
}

func (p *Projector) resetRow(n int) {
	if cap(p.dec) < n {
		p.dec = make([]any, n)
		p.have = make([]bool, n)
	}
	p.dec = p.dec[:n]
	p.have = p.have[:n]
	clear(p.dec)
	clear(p.have)
}

func (p *Projector) filterIn(b *bound, c *cdc.Change, row []cdc.Value) (bool, error) {
	p.resetRow(len(row))
	res, err := p.eval(b, c, b.filter, row)
	if err != nil {
		return false, err
	}
	in, _ := res.(bool)
	return in, nil
}

// eval runs an expression over row, decoding the columns it reads once per
// row.
func (p *Projector) eval(b *bound, c *cdc.Change, e *boundExpr, row []cdc.Value) (any, error) {
	for j, i := range e.cols {
		if !p.have[i] {
			v := row[i]
			var val any
			if v.Kind == cdc.Text {
				var err error
				val, err = cdc.DecodeValue(typeMap, b.rel.Columns[i].TypeOID, v.Text)
				if err != nil {
					return nil, b.rowError(c, row, e.field.Path, fmt.Errorf("column %q: %w", e.names[j], scrub(err)))
				}
			}
			p.dec[i], p.have[i] = val, true
		}
		p.env[e.names[j]] = p.dec[i]
	}
	res, err := p.vm.Run(e.program, p.env)
	if err != nil {
		return nil, b.rowError(c, row, e.field.Path, exprError(err))
	}
	return res, nil
}

// exprError keeps an expression's failure message and position, and drops
// quoted text from it: runtime messages can quote row values, which are
// personal data.
func exprError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := scrubText(fe.Message)
		if strings.Contains(msg, "nil") {
			msg += " (a NULL column is nil in expressions: test it with == nil or give a default with ??, e.g. trim(name ?? \"\"))"
		}
		if fe.Line > 0 {
			return fmt.Errorf("expression failed at %d:%d: %s", fe.Line, fe.Column+1, msg)
		}
		return fmt.Errorf("expression failed: %s", msg)
	}
	return fmt.Errorf("expression failed: %s", scrubText(err.Error()))
}

var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

func scrub(err error) error { return errors.New(scrubText(err.Error())) }

func scrubText(s string) string { return quoted.ReplaceAllString(s, `"…"`) }

// RowError is a failure to project one row. It names the mapping file, the
// field and the row's primary key, never other row values (they are
// personal data).
type RowError struct {
	File  string
	Path  string // YAML path of the field, "key" or "filter"
	Table cdc.TableName
	PK    string // e.g. (cst_id)=(42); empty when unknown
	LSN   string // commit LSN of the change's transaction, when known
	Err   error
}

func (e *RowError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mapping %s: ", e.File)
	if e.Path != "" {
		fmt.Fprintf(&b, "%s: ", e.Path)
	}
	fmt.Fprintf(&b, "cannot project the row of %s", e.Table)
	if e.PK != "" {
		fmt.Fprintf(&b, " with %s", e.PK)
	}
	fmt.Fprintf(&b, ": %v; ", e.Err)
	if e.LSN != "" {
		fmt.Fprintf(&b, "the slot was not confirmed past this change (commit LSN %s): ", e.LSN)
	} else {
		b.WriteString("the slot was not confirmed past this change: ")
	}
	b.WriteString("fix the mapping or the row and restart the bridge")
	return b.String()
}

func (e *RowError) Unwrap() error { return e.Err }

func (b *bound) rowError(c *cdc.Change, row []cdc.Value, path string, err error) error {
	return &RowError{File: b.m.File, Path: path, Table: b.rel.Table, PK: b.pkText(row), LSN: lsnOf(c), Err: err}
}

// pkText renders the primary key (or, without one, the mapping key) of row
// as PostgreSQL prints keys in constraint errors: (a, b)=(1, x).
func (b *bound) pkText(row []cdc.Value) string {
	at := b.pk
	if len(at) == 0 {
		at = b.key
	}
	if len(at) == 0 || row == nil {
		return ""
	}
	var names, vals []string
	for _, i := range at {
		names = append(names, b.rel.Columns[i].Name)
		switch {
		case i >= len(row):
			vals = append(vals, "?")
		case row[i].Kind == cdc.Text:
			vals = append(vals, string(row[i].Text))
		case row[i].Kind == cdc.Null:
			vals = append(vals, "NULL")
		default:
			vals = append(vals, "?")
		}
	}
	return "(" + strings.Join(names, ", ") + ")=(" + strings.Join(vals, ", ") + ")"
}

// TruncateError stops the bridge at a TRUNCATE of a mapped table whose
// mapping does not ignore truncates.
type TruncateError struct {
	Table cdc.TableName
	File  string // the mapping file
	Topic string
	LSN   string // commit LSN of the TRUNCATE's transaction, when known
}

func (e *TruncateError) Error() string {
	at := ""
	if e.LSN != "" {
		at = " (commit LSN " + e.LSN + ")"
	}
	return fmt.Sprintf("table %s was truncated%s and its mapping says on_truncate: fail; topic %s still holds the truncated entities. "+
		"The bridge stopped before confirming past the TRUNCATE, and stops here again on restart. "+
		"To go on, set on_truncate: tombstone in %s (the bridge then tombstones every key the topic held before the TRUNCATE) or on_truncate: ignore (the topic keeps them), and restart",
		e.Table, at, e.Topic, e.File)
}

// ProjectRow returns the state of one full row as an insert of it would
// produce: its key, its document, and whether it passes the filter (value
// is nil when it does not; key is nil too when the row has a NULL key
// column, which is an error only for a row that passes the filter). Values
// are in text format, as a fresh SELECT returns them; none may be
// unchanged. It is safe for concurrent use; a goroutine that projects many
// rows does better with a RowProjector of its own.
func (m *Mapping) ProjectRow(rel *cdc.Relation, row []cdc.Value) (key, value []byte, in bool, err error) {
	if m.c == nil {
		return nil, nil, false, fmt.Errorf("mapping %s: not checked against the catalog; call Set.Check first", m.File)
	}
	rp := &m.c.row
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.rp == nil {
		rp.rp = m.newRowProjector()
	}
	_, key, value, in, err = rp.rp.Append(nil, rel, row)
	return key, value, in, err
}

// rowProjector is the RowProjector ProjectRow shares between its callers.
type rowProjector struct {
	mu sync.Mutex
	rp *RowProjector
}

// RowProjector projects full rows of one mapping, reusing its scratch
// space from row to row. It is not safe for concurrent use: give each
// goroutine its own.
type RowProjector struct {
	m     *Mapping
	bound *bound
	p     *Projector
	c     cdc.Change
}

// RowProjector returns a new RowProjector of a checked mapping.
func (m *Mapping) RowProjector() (*RowProjector, error) {
	if m.c == nil {
		return nil, fmt.Errorf("mapping %s: not checked against the catalog; call Set.Check first", m.File)
	}
	return m.newRowProjector(), nil
}

func (m *Mapping) newRowProjector() *RowProjector {
	return &RowProjector{m: m, p: NewProjector(&Set{})}
}

// Mapping returns the mapping rp projects.
func (rp *RowProjector) Mapping() *Mapping { return rp.m }

// Append projects row as ProjectRow does and appends its key, then its
// value, to dst; key and value are slices of the returned buffer (key is
// nil for a keyless row outside the filter, value nil outside the filter).
func (rp *RowProjector) Append(dst []byte, rel *cdc.Relation, row []cdc.Value) (out, key, value []byte, in bool, err error) {
	if rp.bound == nil || rp.bound.rel != rel {
		b, err := rp.m.bind(rel)
		if err != nil {
			return dst, nil, nil, false, err
		}
		rp.bound = b
	}
	b, p := rp.bound, rp.p
	if p.lacks(b, row) {
		return dst, nil, nil, false, b.rowError(&cdc.Change{}, row, "", errors.New("the row lacks values; ProjectRow needs every column the mapping reads"))
	}
	rp.c = cdc.Change{Op: cdc.Insert, Relation: rel, New: row}
	c := &rp.c
	if b.filter != nil {
		if in, err = p.filterIn(b, c, row); err != nil {
			return dst, nil, nil, false, err
		}
	} else {
		in = true
	}
	if !in && b.keyless(row) {
		return dst, nil, nil, false, nil
	}
	k, err := p.renderKey(b, c, row)
	if err != nil {
		return dst, nil, nil, false, err
	}
	start := len(dst)
	dst = append(dst, k...)
	key = dst[start:len(dst):len(dst)]
	if !in {
		return dst, key, nil, false, nil
	}
	v, err := p.renderValue(b, c, row)
	if err != nil {
		return dst, nil, nil, false, err
	}
	start = len(dst)
	dst = append(dst, v...)
	// key may point into an array append has since replaced; both point
	// into the returned buffer's arrays, which stay valid.
	return dst, key, dst[start:len(dst):len(dst)], true, nil
}

// renamed is the error for a mapped table that now streams under another
// name: its changes must not pass as those of an unmapped table.
func renamed(m *Mapping, from, to cdc.TableName) error {
	return fmt.Errorf("mapping %s: table %s was renamed to %s while the bridge was running; update the mapping and restart the bridge — the slot was not confirmed past this change", m.File, from, to)
}
