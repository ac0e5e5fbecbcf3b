package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the demo end to end, as the README's first command does,
// and checks that it reaches convergence and shows what it promises.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, false); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"converged in",
		"snapshot key=C-0999",
		"key=C-1003   TOMBSTONE (null value)",
		"key=C-2003",
		"key=5002     TOMBSTONE (null value)",
		"(200126 bytes)",
		"bridge stopped cleanly",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", got)
	}
}
