package bridge

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/statefeed/statefeed/mapping"
)

// writeMapping replaces the test's mapping directory with one file.
func writeMapping(t *testing.T, e *env, name, body string) {
	t.Helper()
	dir := e.cfg.Mappings[0]
	old, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range old {
		os.Remove(f)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := mapping.Load(e.cfg.Mappings)
	if err != nil {
		t.Fatal(err)
	}
	e.set = set
}

func lsnGreater(t *testing.T, a, b string) bool {
	t.Helper()
	la, err := pglogrepl.ParseLSN(a)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := pglogrepl.ParseLSN(b)
	if err != nil {
		t.Fatal(err)
	}
	return la > lb
}
