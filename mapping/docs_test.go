package mapping

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// readDoc returns a file of docs/ as text.
func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../docs/" + name)
	if err != nil {
		t.Fatalf("read the reference: %v", err)
	}
	return string(b)
}

// section returns the part of a Markdown document from the heading line
// to the next heading of the same or a higher level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	start := strings.Index(doc, "\n"+heading+"\n")
	if start < 0 {
		t.Fatalf("heading %q not found", heading)
	}
	level := strings.Index(heading, " ") // number of '#'
	rest := doc[start+len(heading)+2:]
	for i := 0; i < len(rest); {
		j := strings.IndexByte(rest[i:], '\n')
		if j < 0 {
			break
		}
		line := rest[i : i+j]
		if n := len(line) - len(strings.TrimLeft(line, "#")); n > 0 && n <= level && strings.HasPrefix(line[n:], " ") {
			return rest[:i]
		}
		i += j + 1
	}
	return rest
}

// yamlKeys lists the keys a struct decoded by yamlconf accepts, from its
// tags.
func yamlKeys(v any) []string {
	var keys []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// TestDocsMappingKeys keeps docs/mappings.md in step with the loader:
// every key a mapping file may contain, and every on_truncate value, is
// described there.
func TestDocsMappingKeys(t *testing.T) {
	doc := readDoc(t, "mappings.md")
	top := section(t, doc, "## Top-level keys")
	keys := yamlKeys(spec{})
	if len(keys) < 7 {
		t.Fatalf("found only %d keys in the spec's tags: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.Contains(top, "| `"+k+"` |") {
			t.Errorf("docs/mappings.md: the top-level keys table has no row for `%s`, which the loader accepts", k)
		}
	}
	fields := section(t, doc, "## Fields")
	for _, k := range yamlKeys(explicitField{}) {
		if !strings.Contains(fields, "{"+k+": ...}") {
			t.Errorf("docs/mappings.md: the fields section does not describe the explicit form {%s: ...}", k)
		}
	}
	for _, v := range []OnTruncate{TruncateFail, TruncateIgnore} {
		if !strings.Contains(doc, "on_truncate: "+string(v)) {
			t.Errorf("docs/mappings.md: on_truncate: %s is not described", v)
		}
	}
}

// renderedTypes returns the names of the PostgreSQL types the renderer
// has a rule of their own for, and checks that together with text and
// arrays they cover every rendering kind.
func renderedTypes(t *testing.T) []string {
	t.Helper()
	names := []string{"text"}
	kinds := map[kind]bool{typeFor(pgtype.TextOID, "").kind: true, typeFor(pgtype.Int4ArrayOID, "").kind: true}
	for oid, ct := range scalarType {
		typ, ok := typeMap.TypeForOID(oid)
		if !ok {
			t.Fatalf("renderer knows type OID %d, which has no name", oid)
		}
		names = append(names, typ.Name)
		kinds[ct.kind] = true
	}
	for k := kindString; k <= kindArray; k++ {
		if !kinds[k] {
			t.Errorf("rendering kind %d has no type in this test; add one", k)
		}
	}
	slices.Sort(names)
	return names
}

// TestDocsRenderedTypes keeps the value rendering table of
// docs/message-contract.md, and the expression types of docs/mappings.md,
// in step with the renderer: every type with a rule of its own is listed.
func TestDocsRenderedTypes(t *testing.T) {
	contract := firstCells(section(t, readDoc(t, "message-contract.md"), "### Value rendering"))
	exprTypes := firstCells(section(t, readDoc(t, "mappings.md"), "## Expressions"))
	for _, name := range renderedTypes(t) {
		if !strings.Contains(contract, "`"+name+"`") {
			t.Errorf("docs/message-contract.md: the value rendering table has no row for `%s`", name)
		}
		if !strings.Contains(exprTypes, "`"+name+"`") {
			t.Errorf("docs/mappings.md: the expression types table has no row for `%s`", name)
		}
	}
	if !strings.Contains(contract, "arrays") {
		t.Errorf("docs/message-contract.md: the value rendering table has no row for arrays")
	}
}

// firstCells returns the first cells of the Markdown table rows in text,
// one a line: the type names of a type table.
func firstCells(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) > 2 && strings.TrimSpace(cells[0]) == "" {
			b.WriteString(cells[1] + "\n")
		}
	}
	return b.String()
}
