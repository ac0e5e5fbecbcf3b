package publish

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// headerConstants returns the Header* constants of message.go, name to
// value, read from the source so that a new header cannot be missed.
func headerConstants(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "message.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := make(map[string]string)
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Header") {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				consts[name.Name] = v
			}
		}
	}
	return consts
}

// TestDocsHeaders keeps docs/message-contract.md in step with the
// headers the producer writes: every header has a row in the headers
// table, and the fixed values are the documented ones.
func TestDocsHeaders(t *testing.T) {
	b, err := os.ReadFile("../docs/message-contract.md")
	if err != nil {
		t.Fatalf("read the contract: %v", err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## Headers\n")
	if start < 0 {
		t.Fatal(`docs/message-contract.md has no "## Headers" section`)
	}
	headers := doc[start+1:]
	if end := strings.Index(headers[1:], "\n## "); end >= 0 {
		headers = headers[:end+1]
	}

	consts := headerConstants(t)
	if len(consts) < 11 {
		t.Fatalf("found only %d Header constants in message.go: %v", len(consts), consts)
	}
	for name, h := range consts {
		if !strings.Contains(headers, "| `"+h+"` |") {
			t.Errorf("docs/message-contract.md: the headers table has no row for %s (%s)", h, name)
		}
	}
	for h, v := range map[string]string{HeaderSpecVersion: SpecVersion, HeaderContentType: ContentType} {
		if !strings.Contains(headers, "| `"+h+"` |") || !strings.Contains(headers, "`"+v+"`") {
			t.Errorf("docs/message-contract.md: %s is not documented with its value %s", h, v)
		}
	}

	// Every header the producer writes on a fully described message is a
	// constant checked above.
	m := &Message{Topic: "t", Key: []byte("k"), ID: "i", Source: "s", Type: "e", Time: time.Unix(1, 0), LSN: 1, XID: 1, Table: "s.t", Op: "insert"}
	var f inflight
	f.set(m)
	for _, rh := range f.rec.Headers {
		found := false
		for _, h := range consts {
			found = found || h == rh.Key
		}
		if !found {
			t.Errorf("the producer writes header %q, which is not a Header constant", rh.Key)
		}
	}
}
