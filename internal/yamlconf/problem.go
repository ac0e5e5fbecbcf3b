package yamlconf

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a configuration file, at a position.
type Problem struct {
	File string
	Line int    // 1-based; 0 when the problem is about the whole file
	Path string // YAML path such as kafka.brokers[1] or fields.address.city; empty for the document
	Msg  string // what is wrong, optionally followed by "; " and what to do
}

// String formats the problem as "<file>:<line>: <path>: <msg>", leaving out
// the line when it is unknown and the path when it is empty.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems collects the problems of one or more files. It is an error that
// lists them sorted by file, line and path, one a line.
type Problems []Problem

// Add records a problem at node n (which may be nil for a file-level problem).
func (ps *Problems) Add(file string, n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	ps.AddLine(file, line, path, format, args...)
}

// AddLine records a problem at an explicit line.
func (ps *Problems) AddLine(file string, line int, path, format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	*ps = append(*ps, Problem{File: file, Line: line, Path: path, Msg: msg})
}

// Sort orders the problems by file, line, path and message, and drops exact
// duplicates.
func (ps *Problems) Sort() {
	slices.SortStableFunc(*ps, func(a, b Problem) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
	*ps = slices.Compact(*ps)
}

// Err returns the problems sorted as an error, or nil when there are none.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	sorted := slices.Clone(ps)
	sorted.Sort()
	return sorted
}

// Error lists the problems sorted, one a line.
func (ps Problems) Error() string {
	sorted := slices.Clone(ps)
	sorted.Sort()
	var b strings.Builder
	for i, p := range sorted {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}
