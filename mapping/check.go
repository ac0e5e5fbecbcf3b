package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/internal/yamlconf"
)

// compiled is what Check derives from the catalog for one mapping.
type compiled struct {
	table      *cdc.Table
	readBy     []string // columns identifying a row for RowReader: the primary key, else the key
	colOID     map[string]uint32
	colType    map[string]string
	filter     *Field // the filter as a pseudo-field: Path "filter", program and columns
	renderSpec []renderSpec
	row        rowProjector // ProjectRow's state
}

// renderSpec is one leaf of the entity document, flattened: the JSON text
// that precedes its value, and the field that produces the value.
type renderSpec struct {
	prefix []byte
	field  *Field
}

// Check validates the mappings against the live catalog and compiles their
// expressions, once. Every problem of every mapping is reported at once,
// sorted, as a yamlconf.Problems error. A mapping without a key gets the
// table's primary key. Check must succeed before NewProjector or ProjectRow
// is used.
func (s *Set) Check(cat cdc.Catalog) error {
	var p yamlconf.Problems
	for _, m := range s.Mappings {
		m.check(cat, &p)
	}
	if err := p.Err(); err != nil {
		return err
	}
	s.checked = true
	return nil
}

func (m *Mapping) check(cat cdc.Catalog, p *yamlconf.Problems) {
	t := cat[m.Table]
	if t == nil {
		names := make([]string, 0, len(cat))
		for n := range cat {
			names = append(names, n.String())
		}
		p.AddLine(m.File, m.pos.table, "table", "table %s not found; check the name (it is case-sensitive) and that the bridge's user can see it%s", m.Table, yamlconf.DidYouMean(m.Table.String(), names))
		return
	}
	c := &compiled{table: t, colOID: make(map[string]uint32, len(t.Columns)), colType: make(map[string]string, len(t.Columns))}
	columns := make([]string, len(t.Columns))
	env := make(types.Map, len(t.Columns))
	for i, col := range t.Columns {
		columns[i] = col.Name
		c.colOID[col.Name] = col.TypeOID
		c.colType[col.Name] = col.Type
		env[col.Name] = exprType(col.TypeOID, col.Type)
	}
	notFound := func(line int, path, col string) {
		p.AddLine(m.File, line, path, "column %q not found in table %s%s", col, m.Table, yamlconf.DidYouMean(col, columns))
	}
	ok := true
	if t.ReplicaIdentity == 'n' {
		p.AddLine(m.File, m.pos.table, "table", "table %s has REPLICA IDENTITY NOTHING, so updates and deletes arrive without the old row and no tombstone could be keyed; run ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key) or FULL", m.Table, quoteTable(m.Table))
		ok = false
	}

	// The key.
	key := m.Key
	if len(key) == 0 {
		if len(t.PrimaryKey) == 0 {
			p.AddLine(m.File, m.pos.table, "key", "no key given and table %s has no primary key; set key: [columns] to the business key, or add a primary key to the table", m.Table)
			ok = false
		}
		key = t.PrimaryKey
	}
	for i, col := range key {
		path := "key"
		if len(m.Key) > 1 {
			path = fmt.Sprintf("key[%d]", i)
		}
		if t.Column(col) == nil {
			notFound(m.pos.key, path, col)
			ok = false
			continue
		}
		if t.ReplicaIdentity != 'n' && !slices.Contains(t.IdentityColumns, col) {
			p.AddLine(m.File, m.pos.key, path, "column %q is not part of table %s's replica identity, so deletes and key changes would arrive without it; run ALTER TABLE %s REPLICA IDENTITY FULL (or make the key the primary key)", col, m.Table, quoteTable(m.Table))
			ok = false
		}
	}
	readBy := t.PrimaryKey
	if len(readBy) == 0 {
		readBy = key
	}

	// The fields and the filter.
	var walk func(fs []*Field)
	walk = func(fs []*Field) {
		for _, f := range fs {
			switch {
			case f.Fields != nil:
				walk(f.Fields)
			case f.Column != "":
				if t.Column(f.Column) == nil {
					notFound(f.Line, f.Path, f.Column)
					ok = false
				}
			default:
				if !compileField(m.File, f, env, false, p) {
					ok = false
				}
			}
		}
	}
	walk(m.Fields)
	if m.Filter != "" {
		c.filter = &Field{Name: "filter", Path: "filter", Line: m.pos.filter, Expr: m.Filter, exprLine: m.pos.filterFirst}
		if !compileField(m.File, c.filter, env, true, p) {
			ok = false
		}
	}
	if !ok {
		return
	}
	m.Key = slices.Clone(key)
	c.readBy = slices.Clone(readBy)
	c.renderSpec = flatten(m.Fields)
	m.c = c
}

func quoteTable(t cdc.TableName) string {
	return quoteIdent(t.Schema) + "." + quoteIdent(t.Name)
}

// quoteIdent quotes a name for SQL when it needs it.
func quoteIdent(s string) string {
	plain := s != ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			plain = false
		}
	}
	if plain {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// exprType is the type an expression sees for a column: the Go type
// cdc.DecodeValue returns for it. Columns of unknown types are strings.
func exprType(oid uint32, catalogType string) types.Type {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		return types.Int64
	case pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
		return types.Float64
	case pgtype.BoolOID:
		return types.Bool
	case pgtype.ByteaOID:
		return types.TypeOf([]byte(nil))
	case pgtype.DateOID, pgtype.TimestampOID, pgtype.TimestamptzOID:
		return types.TypeOf(time.Time{})
	case pgtype.JSONOID, pgtype.JSONBOID:
		return types.Any
	}
	if _, _, ok := cdc.ArrayElement(typeMap, oid); ok {
		return types.TypeOf([]any(nil))
	}
	return types.String
}

var unknownName = regexp.MustCompile(`^unknown name (\S+)$`)

// compileField compiles an expression field (or the filter), recording
// problems at the expression's own line and column.
func compileField(fileName string, f *Field, env types.Map, asBool bool, p *yamlconf.Problems) bool {
	opts := []expr.Option{
		expr.Env(env),
		// Projection must be deterministic: the same row gives the same
		// document whenever it is projected.
		expr.DisableBuiltin("now"),
		expr.Timezone("UTC"),
	}
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	prog, err := expr.Compile(f.Expr, opts...)
	if err != nil {
		line, col, msg := f.exprLine, 0, err.Error()
		var fe *file.Error
		if errors.As(err, &fe) {
			msg = fe.Message
			if fe.Line > 0 {
				line += fe.Line - 1
				col = fe.Column + 1
			}
		}
		if m := unknownName.FindStringSubmatch(msg); m != nil && m[1] == "now" {
			msg = "now() is not available: a projection must give the same document whenever the row is projected; use a timestamp column instead"
		} else if m != nil {
			cols := make([]string, 0, len(env))
			for k := range env {
				cols = append(cols, k)
			}
			msg = fmt.Sprintf("unknown name %s: no such column%s", m[1], yamlconf.DidYouMean(m[1], cols))
		}
		where := "invalid expression"
		if col > 0 {
			where = fmt.Sprintf("invalid expression at column %d", col)
		}
		if line == 0 {
			line = f.Line
		}
		p.AddLine(fileName, line, f.Path, "%s: %s", where, msg)
		return false
	}
	f.program = prog
	f.columns, f.allColumns = referencedColumns(prog, env)
	return true
}

// referencedColumns lists the columns an expression reads, in order of
// first use, so projection decodes only those.
func referencedColumns(prog *vm.Program, env types.Map) (cols []string, all bool) {
	node := prog.Node()
	v := &identVisitor{env: env}
	ast.Walk(&node, v)
	return v.cols, v.all
}

type identVisitor struct {
	env  types.Map
	cols []string
	all  bool
}

func (v *identVisitor) Visit(n *ast.Node) {
	id, ok := (*n).(*ast.IdentifierNode)
	if !ok {
		return
	}
	if id.Value == "$env" {
		v.all = true
		return
	}
	if _, isCol := v.env[id.Value]; isCol && !slices.Contains(v.cols, id.Value) {
		v.cols = append(v.cols, id.Value)
	}
}

// flatten turns the field tree into leaves, each with the JSON text that
// precedes its value ("{\"id\":", ",\"address\":{\"city\":", ...). The
// text after the last leaf is returned as a final spec with a nil field.
func flatten(fields []*Field) []renderSpec {
	var specs []renderSpec
	pending := []byte{'{'}
	var walk func(fs []*Field)
	walk = func(fs []*Field) {
		for i, f := range fs {
			if i > 0 {
				pending = append(pending, ',')
			}
			pending = appendJSONString(pending, []byte(f.Name))
			pending = append(pending, ':')
			if f.Fields != nil {
				pending = append(pending, '{')
				walk(f.Fields)
				pending = append(pending, '}')
				continue
			}
			specs = append(specs, renderSpec{prefix: pending, field: f})
			pending = nil
		}
	}
	walk(fields)
	pending = append(pending, '}')
	return append(specs, renderSpec{prefix: pending})
}
