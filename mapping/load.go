package mapping

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/internal/yamlconf"
)

// Set is the mappings of a bridge, loaded from YAML and, after Check,
// validated against the catalog and compiled. A checked Set is read-only
// and safe for concurrent use.
type Set struct {
	Mappings []*Mapping // in file order

	byTable map[cdc.TableName][]*Mapping
	checked bool
}

// OnTruncate says what a TRUNCATE of a mapped table does.
type OnTruncate string

const (
	// TruncateTombstone publishes a tombstone for every key the topic
	// holds from before the TRUNCATE (the default); the bridge reads the
	// keys back from the topic.
	TruncateTombstone OnTruncate = "tombstone"
	// TruncateFail stops the bridge with a *TruncateError.
	TruncateFail OnTruncate = "fail"
	// TruncateIgnore skips the TRUNCATE; the topic keeps the truncated
	// entities until they are deleted or re-seeded.
	TruncateIgnore OnTruncate = "ignore"
)

// Mapping is one entity mapping, from one YAML file.
type Mapping struct {
	File   string        // the file it was loaded from, as named to Load
	Entity string        // entity type (CloudEvents ce_type)
	Topic  string        // Kafka topic
	Table  cdc.TableName // source table; "public" when the file names no schema
	// Key lists the business key columns. When the file gives none, Check
	// sets it to the table's primary key.
	Key        []string
	Filter     string // expr-lang boolean over the row; "" keeps every row
	OnTruncate OnTruncate
	Fields     []*Field // in YAML order

	pos positions
	c   *compiled // set by Check
}

// Field is one field of the entity document: a column, an expression, or
// a nested object (Fields).
type Field struct {
	Name   string
	Path   string // YAML path, e.g. fields.address.city
	Line   int
	Column string   // for a column field
	Expr   string   // for an expression field
	Fields []*Field // for a nested object

	exprLine   int // line of the expression's first line
	program    *vm.Program
	columns    []string // columns the expression reads
	allColumns bool     // the expression reads $env
}

type positions struct {
	entity, topic, table, key, filter, onTruncate int
	filterFirst                                   int // line of the filter's first line
}

// spec is the shape of a mapping file, for yamlconf.Decode.
type spec struct {
	Entity     string     `yaml:"entity,required"`
	Topic      string     `yaml:"topic,required"`
	Table      string     `yaml:"table,required"`
	Key        []string   `yaml:"key"`
	Filter     *yaml.Node `yaml:"filter"`
	OnTruncate string     `yaml:"on_truncate"`
	Fields     *yaml.Node `yaml:"fields,required"`
}

// Load reads mapping files. Each path is a file, or a directory whose
// *.yaml and *.yml files (not its subdirectories) are read in name order.
// Every problem of every file is reported at once, sorted, one a line, as a
// yamlconf.Problems error. Two mappings may not share an entity name or a
// topic.
func Load(paths []string) (*Set, error) {
	var p yamlconf.Problems
	var files []string
	for _, path := range paths {
		info, err := os.Stat(path)
		if err != nil {
			p.AddLine(path, 0, "", "cannot read mappings: %v", unwrapPathError(err))
			continue
		}
		if !info.IsDir() {
			files = append(files, path)
			continue
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			p.AddLine(path, 0, "", "cannot read mappings: %v", unwrapPathError(err))
			continue
		}
		n := len(files)
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		if len(files) == n {
			p.AddLine(path, 0, "", "directory has no *.yaml or *.yml files")
		}
	}
	if len(files) == 0 && len(p) == 0 {
		return nil, fmt.Errorf("no mapping files given")
	}
	s := &Set{byTable: make(map[cdc.TableName][]*Mapping)}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			p.AddLine(f, 0, "", "cannot read: %v", unwrapPathError(err))
			continue
		}
		if m := parse(f, data, &p); m != nil {
			s.Mappings = append(s.Mappings, m)
		}
	}
	s.checkUnique(&p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	for _, m := range s.Mappings {
		s.byTable[m.Table] = append(s.byTable[m.Table], m)
	}
	return s, nil
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (s *Set) checkUnique(p *yamlconf.Problems) {
	entities := make(map[string]*Mapping)
	topics := make(map[string]*Mapping)
	for _, m := range s.Mappings {
		if m.Entity != "" {
			if first, dup := entities[m.Entity]; dup {
				p.AddLine(m.File, m.pos.entity, "entity", "entity %q is already defined in %s:%d; give each mapping its own entity name", m.Entity, first.File, first.pos.entity)
			} else {
				entities[m.Entity] = m
			}
		}
		if m.Topic != "" {
			if first, dup := topics[m.Topic]; dup {
				p.AddLine(m.File, m.pos.topic, "topic", "topic %q is already written by %s:%d; a compacted topic holds one entity type, so give each mapping its own topic", m.Topic, first.File, first.pos.topic)
			} else {
				topics[m.Topic] = m
			}
		}
	}
}

// OfTable returns the mappings of a table, in file order.
func (s *Set) OfTable(t cdc.TableName) []*Mapping { return s.byTable[t] }

// Entity returns the mapping of the named entity, or nil.
func (s *Set) Entity(name string) *Mapping {
	for _, m := range s.Mappings {
		if m.Entity == name {
			return m
		}
	}
	return nil
}

// Tables returns the distinct source tables of the mappings, sorted.
func (s *Set) Tables() []cdc.TableName {
	var ts []cdc.TableName
	for _, m := range s.Mappings {
		if !slices.Contains(ts, m.Table) {
			ts = append(ts, m.Table)
		}
	}
	slices.SortFunc(ts, func(a, b cdc.TableName) int {
		return strings.Compare(a.String(), b.String())
	})
	return ts
}

// parse decodes one mapping file, recording its problems in p. It returns
// nil when the file is not a mapping at all.
func parse(file string, data []byte, p *yamlconf.Problems) *Mapping {
	root := yamlconf.Parse(file, data, p)
	if root == nil {
		return nil
	}
	var sp spec
	yamlconf.Decode(file, root, "", &sp, p)
	if root.Kind != yaml.MappingNode {
		return nil
	}
	m := &Mapping{File: file, Entity: sp.Entity, Topic: sp.Topic, Key: sp.Key, OnTruncate: TruncateTombstone}
	keys, vals, _ := yamlconf.Pairs(file, root, "", &yamlconf.Problems{})
	line := func(name string) int {
		for i, k := range keys {
			if k.Value == name {
				if vals[i] != nil {
					return vals[i].Line
				}
				return k.Line
			}
		}
		return root.Line
	}
	m.pos = positions{
		entity: line("entity"), topic: line("topic"), table: line("table"),
		key: line("key"), filter: line("filter"), onTruncate: line("on_truncate"),
	}
	if sp.Topic != "" {
		if msg := checkTopic(sp.Topic); msg != "" {
			p.AddLine(file, m.pos.topic, "topic", "%s", msg)
		}
	}
	if sp.Table != "" {
		t, msg := parseTable(sp.Table)
		if msg != "" {
			p.AddLine(file, m.pos.table, "table", "%s", msg)
		}
		m.Table = t
	}
	for i, k := range m.Key {
		switch {
		case k == "":
			p.AddLine(file, m.pos.key, fmt.Sprintf("key[%d]", i), "empty column name")
		case slices.Index(m.Key, k) < i:
			p.AddLine(file, m.pos.key, fmt.Sprintf("key[%d]", i), "column %q is listed twice; remove one", k)
		}
	}
	switch OnTruncate(sp.OnTruncate) {
	case "", TruncateTombstone:
	case TruncateFail, TruncateIgnore:
		m.OnTruncate = OnTruncate(sp.OnTruncate)
	default:
		p.AddLine(file, m.pos.onTruncate, "on_truncate", "unknown value %q; use tombstone (tombstone the truncated entities, the default), fail (stop the bridge) or ignore", sp.OnTruncate)
	}
	if f := sp.Filter; f != nil && !(f.Kind == yaml.ScalarNode && f.Tag == "!!null") {
		if f.Kind != yaml.ScalarNode {
			p.Add(file, f, "filter", "expected an expression, got %s", yamlconf.Describe(f))
		} else {
			m.Filter = f.Value
			m.pos.filterFirst = exprFirstLine(f)
		}
	}
	if sp.Fields != nil {
		m.Fields = parseFields(file, sp.Fields, "fields", p)
	}
	return m
}

// checkTopic returns what is wrong with a Kafka topic name, or "".
func checkTopic(t string) string {
	if t == "." || t == ".." {
		return fmt.Sprintf("invalid topic name %q; Kafka reserves it", t)
	}
	if len(t) > 249 {
		return fmt.Sprintf("topic name is %d characters long; Kafka allows at most 249", len(t))
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Sprintf("invalid character %q in topic name %q; Kafka allows letters, digits, '.', '_' and '-'", r, t)
		}
	}
	return ""
}

// parseTable splits "schema.name" (or "name", in schema public). Names are
// taken as written, case-sensitively, as the catalog spells them; either
// part may be double-quoted to contain a dot.
func parseTable(s string) (cdc.TableName, string) {
	parts, ok := splitQualified(s)
	bad := fmt.Sprintf("invalid table name %q; write schema.table, e.g. public.customers", s)
	if !ok {
		return cdc.TableName{}, bad
	}
	switch len(parts) {
	case 1:
		return cdc.TableName{Schema: "public", Name: parts[0]}, ""
	case 2:
		return cdc.TableName{Schema: parts[0], Name: parts[1]}, ""
	}
	return cdc.TableName{}, bad
}

func splitQualified(s string) ([]string, bool) {
	var parts []string
	for s != "" {
		var part string
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, false
			}
			part, s = s[1:end+1], s[end+2:]
		} else {
			i := strings.IndexByte(s, '.')
			if i < 0 {
				i = len(s)
			}
			part, s = s[:i], s[i:]
		}
		if part == "" {
			return nil, false
		}
		parts = append(parts, part)
		if s == "" {
			break
		}
		if s[0] != '.' || len(s) == 1 {
			return nil, false
		}
		s = s[1:]
	}
	return parts, len(parts) > 0
}

// exprFirstLine is the line an expression's text starts on: block scalars
// (| and >) start on the line after their indicator.
func exprFirstLine(n *yaml.Node) int {
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return n.Line + 1
	}
	return n.Line
}

// isIdent reports whether s is a plain identifier, which names a column.
func isIdent(s string) bool {
	if s == "" || s == "true" || s == "false" || s == "nil" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

type explicitField struct {
	Column string `yaml:"column"`
	Expr   string `yaml:"expr"`
}

// parseFields decodes the fields of an object. A mapping with a scalar
// "column" or "expr" key is a field's explicit form; any other mapping is a
// nested object.
func parseFields(file string, n *yaml.Node, path string, p *yamlconf.Problems) []*Field {
	keys, vals, ok := yamlconf.Pairs(file, n, path, p)
	if !ok {
		return nil
	}
	if len(keys) == 0 {
		p.Add(file, n, path, "no fields; list at least one field")
		return nil
	}
	fields := make([]*Field, 0, len(keys))
	for i, k := range keys {
		fpath := yamlconf.Join(path, k.Value)
		v := vals[i]
		f := &Field{Name: k.Value, Path: fpath, Line: k.Line}
		if k.Value == "" {
			p.Add(file, k, path, "empty field name")
			continue
		}
		switch {
		case v == nil || v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			p.Add(file, k, fpath, "no value; write a column name, an expression, {column: ...}, {expr: ...} or nested fields")
			continue
		case v.Kind == yaml.ScalarNode:
			if v.Tag == "!!str" && isIdent(v.Value) {
				f.Column = v.Value
			} else {
				f.Expr = v.Value
				f.exprLine = exprFirstLine(v)
			}
		case v.Kind == yaml.MappingNode && isExplicit(v):
			var ef explicitField
			yamlconf.Decode(file, v, fpath, &ef, p)
			switch {
			case ef.Column != "" && ef.Expr != "":
				p.Add(file, v, fpath, "both column and expr are set; keep one")
			case ef.Column != "":
				f.Column = ef.Column
			case ef.Expr != "":
				f.Expr = ef.Expr
				for j := 0; j+1 < len(v.Content); j += 2 {
					if v.Content[j].Value == "expr" {
						f.exprLine = exprFirstLine(v.Content[j+1])
					}
				}
			default:
				p.Add(file, v, fpath, "empty column and expr; set one of them")
			}
		case v.Kind == yaml.MappingNode:
			f.Fields = parseFields(file, v, fpath, p)
			if f.Fields == nil {
				continue
			}
		default:
			p.Add(file, v, fpath, "expected a column name, an expression, {column: ...}, {expr: ...} or nested fields, got %s", yamlconf.Describe(v))
			continue
		}
		fields = append(fields, f)
	}
	return fields
}

func isExplicit(n *yaml.Node) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if (k.Value == "column" || k.Value == "expr") && v.Kind == yaml.ScalarNode {
			return true
		}
	}
	return false
}
