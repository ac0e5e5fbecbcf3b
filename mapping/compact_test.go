package mapping

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// compactCases are valid and invalid JSON texts, PostgreSQL's json and
// jsonb output among them.
var compactCases = []string{
	`{"a": 1, "b": [true, false, null], "c": {"d": "e f"}}`,
	"{\"b\": [1, 2.50, null],\n \"a\": \"x\"}",
	` [ 1 , -0 , 0.5 , 1e10 , -2.5E-3 , 1E+2 ] `,
	`"a \"quoted\" \\ \/ \b\f\n\r\t \u00e9 \uD83D\uDE00 é ✓"`,
	`{}`, `[]`, `[[]]`, `{"":{}}`, `0`, `true`, `null`,
	// invalid
	``, ` `, `{"a":}`, `{"a" 1}`, `{a:1}`, `[1,]`, `[1 2]`, `{"a":1,}`, `01`, `1.`, `.5`, `-`, `1e`, `+1`,
	`"unterminated`, `"bad \x escape"`, `"\u12G4"`, "\"ctl \x01\"", `tru`, `nul`, `[1]x`, `{"a":1}}`,
	"\x00", `"\`,
}

// TestCompactJSON checks the fast compactor against json.Compact: the same
// output for valid text, false for invalid text.
func TestCompactJSON(t *testing.T) {
	cases := append(compactCases,
		strings.Repeat("[", maxJSONDepth)+strings.Repeat("]", maxJSONDepth),
		strings.Repeat("[", maxJSONDepth+1)+strings.Repeat("]", maxJSONDepth+1),
	)
	for _, src := range cases {
		checkCompact(t, src)
	}
}

func FuzzCompactJSON(f *testing.F) {
	for _, src := range compactCases {
		f.Add(src)
	}
	f.Fuzz(checkCompact)
}

func checkCompact(t *testing.T, src string) {
	t.Helper()
	got, ok := appendCompactJSON([]byte("prefix"), []byte(src))
	var want bytes.Buffer
	err := json.Compact(&want, []byte(src))
	short := src
	if len(short) > 60 {
		short = short[:60] + "…"
	}
	switch {
	case ok && err != nil:
		t.Errorf("appendCompactJSON accepts %q, which json.Compact refuses: %v", short, err)
	case !ok && err == nil:
		t.Errorf("appendCompactJSON refuses %q, which json.Compact accepts", short)
	case ok && string(got) != "prefix"+want.String():
		t.Errorf("appendCompactJSON(%q) = %q, json.Compact gives %q", short, got, want.String())
	}
}

// BenchmarkCompactJSON compacts a jsonb value as PostgreSQL writes it.
func BenchmarkCompactJSON(b *testing.B) {
	src := []byte(`{"tag": "5d41402abc4b2a76b9719d911017c592", "rank": 56, "flags": [true, false, null], "score": 17636.571428571429, "address": {"city": "Lisbon", "street": "Rua Augusta 100"}}`)
	b.Run("json.Compact", func(b *testing.B) {
		var buf bytes.Buffer
		b.SetBytes(int64(len(src)))
		for b.Loop() {
			buf.Reset()
			json.Compact(&buf, src)
		}
	})
	b.Run("appendCompactJSON", func(b *testing.B) {
		dst := make([]byte, 0, len(src))
		b.SetBytes(int64(len(src)))
		for b.Loop() {
			dst, _ = appendCompactJSON(dst[:0], src)
		}
	})
}
