package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs every workload at a tiny scale: each must produce its row
// of the table with positive rates and ratios, and the bridge side of the
// snapshot must say why it is missing. No timing is asserted.
func TestSmoke(t *testing.T) {
	o, err := parseFlags([]string{"-rows", "2000", "-wide-rows", "300", "-txn-rows", "100", "-rates", "500", "-latency-for", "1s", "-repeat", "2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results, err := measure(ctx, o, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"stream_insert", "stream_update", "stream_mixed", "stream_wide", "big_txn", "snapshot", "latency_500"}
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(results), len(want), results)
	}
	for i, r := range results {
		if r.workload != want[i] {
			t.Errorf("result %d is %s, want %s", i, r.workload, want[i])
		}
		if r.rows <= 0 || r.ceilingRate <= 0 {
			t.Errorf("%s: %d rows, ceiling %f rows/s; want both positive", r.workload, r.rows, r.ceilingRate)
		}
		if r.ratio() <= 0 || r.cpu <= 0 || r.peakRSS <= 0 {
			t.Errorf("%s: ratio %f, CPU %s, peak RSS %d; want all positive", r.workload, r.ratio(), r.cpu, r.peakRSS)
		}
	}
	if lat := results[len(results)-1].latency; len(lat) != 3 || lat[0] <= 0 {
		t.Errorf("latency percentiles = %v, want p50, p95 and p99", lat)
	}

	var text, md bytes.Buffer
	if err := writeText(&text, results); err != nil {
		t.Fatal(err)
	}
	if err := writeMarkdown(&md, results); err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if !strings.Contains(text.String(), w) || !strings.Contains(md.String(), "| "+w+" |") {
			t.Errorf("the tables lack a row for %s:\n%s\n%s", w, text.String(), md.String())
		}
	}
	t.Logf("\n%s", text.String())
}

// TestParseFlags checks that every problem with the flags is reported at
// once.
func TestParseFlags(t *testing.T) {
	tests := []struct {
		args []string
		want []string // substrings of the error; none: no error
	}{
		{nil, nil},
		{[]string{"-workloads", "latency,stream-insert,latency"}, nil},
		{[]string{"-rows", "1", "-workloads", "stream-insert,nope", "-rates", "50,x"}, []string{
			"-rows must be at least 10", `unknown workload "nope"`, `"50" is not a load`, `"x" is not a load`,
		}},
		{[]string{"extra"}, []string{"unexpected arguments"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseFlags(tt.args, &bytes.Buffer{})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// testLog sends the bench's progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
