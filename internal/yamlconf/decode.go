package yamlconf

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Parse parses one YAML document. A syntax error becomes a Problem at the
// line the parser names and Parse returns nil; an empty file returns nil
// with a problem too. The returned node is the document's root (not the
// document node itself).
func Parse(file string, data []byte, p *Problems) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := syntaxError(err)
		p.AddLine(file, line, "", "invalid YAML: %s", msg)
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		p.AddLine(file, 0, "", "file is empty")
		return nil
	}
	return doc.Content[0]
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// syntaxError splits "yaml: line 3: did not find expected key" into 3 and
// "did not find expected key".
func syntaxError(err error) (int, string) {
	msg := err.Error()
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, msg[len(m[0]):]
	}
	return 0, strings.TrimPrefix(msg, "yaml: ")
}

// Decode fills dst, a pointer to a struct, from the mapping node n (a
// document node is unwrapped), recording every problem in p with file and
// YAML paths under path.
//
// Struct fields are matched by their `yaml:"name"` tag; fields without a
// tag, or tagged "-", are not decoded. The tag option ",required" makes a
// key mandatory: a missing key, or one whose value is null, is a problem.
// Supported field types: string, bool, int (and sized ints), float64,
// time.Duration (Go syntax such as "10s"), slices of supported types (a
// single scalar is accepted where a list of scalars is expected), nested
// structs, pointers to structs, map[string]string, and yaml.Node or
// *yaml.Node, which receive the raw node for callers that decode
// themselves. Numbers and booleans are also accepted when quoted, so that
// values produced by environment expansion decode. Fields whose key is
// absent keep the value dst already had, so callers can preset defaults.
func Decode(file string, n *yaml.Node, path string, dst any, p *Problems) {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic(fmt.Sprintf("yamlconf.Decode: dst must be a non-nil pointer, got %T", dst))
	}
	d := decoder{file: file, p: p}
	d.value(unwrap(n), path, v.Elem())
}

type decoder struct {
	file string
	p    *Problems
}

func unwrap(n *yaml.Node) *yaml.Node {
	for n != nil {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	nodeType     = reflect.TypeFor[yaml.Node]()
)

func (d *decoder) add(n *yaml.Node, path, format string, args ...any) {
	d.p.Add(d.file, n, path, format, args...)
}

func (d *decoder) value(n *yaml.Node, path string, v reflect.Value) {
	if n == nil {
		return
	}
	t := v.Type()
	switch {
	case t == nodeType:
		v.Set(reflect.ValueOf(*n))
		return
	case t.Kind() == reflect.Pointer && t.Elem() == nodeType:
		c := *n
		v.Set(reflect.ValueOf(&c))
		return
	case t == durationType:
		if s, ok := d.scalar(n, path, "a duration such as \"10s\""); ok {
			dur, err := time.ParseDuration(s)
			if err != nil {
				d.add(n, path, "expected a duration such as \"10s\" or \"1m30s\", got %s", describe(n))
				return
			}
			v.SetInt(int64(dur))
		}
		return
	}
	switch t.Kind() {
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path, "true or false"); ok {
			switch strings.ToLower(s) {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.add(n, path, "expected true or false, got %s", describe(n))
			}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if s, ok := d.scalar(n, path, "an integer"); ok {
			i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, t.Bits())
			if err != nil {
				if errors.Is(err, strconv.ErrRange) {
					d.add(n, path, "integer %s is out of range", s)
				} else {
					d.add(n, path, "expected an integer, got %s", describe(n))
				}
				return
			}
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if s, ok := d.scalar(n, path, "a non-negative integer"); ok {
			i, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, t.Bits())
			if err != nil {
				d.add(n, path, "expected a non-negative integer, got %s", describe(n))
				return
			}
			v.SetUint(i)
		}
	case reflect.Float32, reflect.Float64:
		if s, ok := d.scalar(n, path, "a number"); ok {
			f, err := strconv.ParseFloat(s, t.Bits())
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.add(n, path, "expected a number, got %s", describe(n))
				return
			}
			v.SetFloat(f)
		}
	case reflect.Slice:
		d.slice(n, path, v)
	case reflect.Map:
		if t.Key().Kind() != reflect.String || t.Elem().Kind() != reflect.String {
			panic(fmt.Sprintf("yamlconf: unsupported map type %s at %s", t, path))
		}
		d.stringMap(n, path, v)
	case reflect.Struct:
		d.structure(n, path, v)
	case reflect.Pointer:
		if t.Elem().Kind() != reflect.Struct {
			panic(fmt.Sprintf("yamlconf: unsupported pointer type %s at %s", t, path))
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.structure(n, path, v.Elem())
	default:
		panic(fmt.Sprintf("yamlconf: unsupported field type %s at %s", t, path))
	}
}

// scalar returns the text of a scalar node, or records that want was
// expected. A null scalar returns ok=false without a problem: it leaves the
// field at its default (required fields are checked separately).
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.add(n, path, "expected %s, got %s", want, describe(n))
		return "", false
	}
	if n.Tag == "!!null" {
		return "", false
	}
	return n.Value, true
}

func (d *decoder) slice(n *yaml.Node, path string, v reflect.Value) {
	t := v.Type()
	items := n.Content
	switch n.Kind {
	case yaml.SequenceNode:
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return
		}
		if k := t.Elem().Kind(); k == reflect.Struct || k == reflect.Pointer || k == reflect.Slice || k == reflect.Map {
			d.add(n, path, "expected a list, got %s", describe(n))
			return
		}
		items = []*yaml.Node{n}
	default:
		d.add(n, path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(t, len(items), len(items))
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		if n.Kind == yaml.ScalarNode {
			ipath = path
		}
		d.value(unwrap(item), ipath, s.Index(i))
	}
	v.Set(s)
}

// pairs returns the key/value pairs of a mapping node, recording duplicate
// and non-scalar keys; the first occurrence of a duplicated key wins.
func (d *decoder) pairs(n *yaml.Node, path string) (keys []*yaml.Node, vals []*yaml.Node, ok bool) {
	return Pairs(d.file, n, path, d.p)
}

// Pairs returns the keys and values of mapping node n in document order,
// after recording a problem for each duplicate key (only the first one is
// returned) and each key that is not a scalar. A node that is not a mapping
// is recorded as a problem and returns ok=false; so does null.
func Pairs(file string, n *yaml.Node, path string, p *Problems) (keys []*yaml.Node, vals []*yaml.Node, ok bool) {
	n = unwrap(n)
	if n == nil {
		return nil, nil, false
	}
	if n.Kind != yaml.MappingNode {
		p.Add(file, n, path, "expected a mapping, got %s", describe(n))
		return nil, nil, false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := unwrap(n.Content[i]), unwrap(n.Content[i+1])
		if k == nil || k.Kind != yaml.ScalarNode {
			p.Add(file, n.Content[i], path, "mapping keys must be plain strings")
			continue
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			p.Add(file, k, path, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.Add(file, k, Join(path, k.Value), "duplicate key (first set on line %d); remove one", first)
			continue
		}
		seen[k.Value] = k.Line
		keys = append(keys, k)
		vals = append(vals, val)
	}
	return keys, vals, true
}

func (d *decoder) stringMap(n *yaml.Node, path string, v reflect.Value) {
	keys, vals, ok := d.pairs(n, path)
	if !ok {
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(keys))
	for i, k := range keys {
		kpath := Join(path, k.Value)
		if vals[i] == nil {
			continue
		}
		s, ok := d.scalar(vals[i], kpath, "a string")
		if !ok {
			continue
		}
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), reflect.ValueOf(s).Convert(v.Type().Elem()))
	}
	v.Set(m)
}

type fieldInfo struct {
	name     string
	index    int
	required bool
}

func structFields(t reflect.Type) []fieldInfo {
	var fs []fieldInfo
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("yaml")
		if !ok || tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fs = append(fs, fieldInfo{name: name, index: i, required: hasOption(opts, "required")})
	}
	return fs
}

func hasOption(opts, want string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == want {
			return true
		}
	}
	return false
}

func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		n = &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
	}
	keys, vals, ok := d.pairs(n, path)
	if !ok {
		return
	}
	fields := structFields(v.Type())
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.name
	}
	set := make(map[string]bool, len(keys))
	for i, k := range keys {
		j := indexOf(fields, k.Value)
		if j < 0 {
			d.add(k, Join(path, k.Value), "unknown key%s", unknownHint(k.Value, known))
			continue
		}
		val := vals[i]
		if val != nil && !(val.Kind == yaml.ScalarNode && val.Tag == "!!null") {
			set[k.Value] = true
		}
		d.value(val, Join(path, k.Value), v.Field(fields[j].index))
	}
	for _, f := range fields {
		if f.required && !set[f.name] {
			at := n
			for i, k := range keys {
				if k.Value == f.name {
					at = vals[i]
				}
			}
			d.add(at, Join(path, f.name), "required key is missing or empty")
		}
	}
}

func unknownHint(name string, known []string) string {
	if s := DidYouMean(name, known); s != "" {
		return s
	}
	if len(known) == 0 {
		return ""
	}
	return "; known keys: " + strings.Join(known, ", ")
}

func indexOf(fs []fieldInfo, name string) int {
	for i := range fs {
		if fs[i].name == name {
			return i
		}
	}
	return -1
}

// Join appends a mapping key to a YAML path.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Describe says what a node holds, for "expected X, got Y" messages:
// `string "abc"`, `number 12`, `boolean true`, `null`, `a mapping`, `a list`.
func Describe(n *yaml.Node) string { return describe(n) }

func describe(n *yaml.Node) string {
	n = unwrap(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	switch n.Tag {
	case "!!null":
		return "null"
	case "!!int", "!!float":
		return "number " + v
	case "!!bool":
		return "boolean " + v
	}
	return "string " + strconv.Quote(v)
}
