package pipeline

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
)

func TestCheckpoint(t *testing.T) {
	// Each step acts on transaction n (0-based, in begin order).
	type step struct {
		do string // begin, produce, ack, fail, commit
		n  int
	}
	tests := []struct {
		name      string
		steps     []step
		confirmed []pglogrepl.LSN
		failed    bool
	}{
		{
			name:      "empty transaction confirms at commit",
			steps:     []step{{"begin", 0}, {"commit", 0}},
			confirmed: []pglogrepl.LSN{100},
		},
		{
			name:      "waits for acknowledgement",
			steps:     []step{{"begin", 0}, {"produce", 0}, {"produce", 0}, {"commit", 0}, {"ack", 0}, {"ack", 0}},
			confirmed: []pglogrepl.LSN{100},
		},
		{
			name:      "acks before commit do not confirm",
			steps:     []step{{"begin", 0}, {"produce", 0}, {"ack", 0}},
			confirmed: nil,
		},
		{
			name: "later transaction waits for earlier one",
			steps: []step{
				{"begin", 0}, {"produce", 0}, {"commit", 0},
				{"begin", 1}, {"produce", 1}, {"commit", 1},
				{"ack", 1}, // 1 is done but 0 is not
				{"ack", 0}, // both confirm at once, at 1's end
			},
			confirmed: []pglogrepl.LSN{200},
		},
		{
			name: "in order",
			steps: []step{
				{"begin", 0}, {"produce", 0}, {"commit", 0}, {"ack", 0},
				{"begin", 1}, {"produce", 1}, {"commit", 1}, {"ack", 1},
			},
			confirmed: []pglogrepl.LSN{100, 200},
		},
		{
			name: "failure stops confirmation for good",
			steps: []step{
				{"begin", 0}, {"produce", 0}, {"commit", 0},
				{"begin", 1}, {"produce", 1}, {"commit", 1},
				{"fail", 0}, {"ack", 1},
			},
			confirmed: nil,
			failed:    true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []pglogrepl.LSN
			var failed error
			c := newCheckpoint(
				func(l pglogrepl.LSN, _ int) { got = append(got, l) },
				func(err error) { failed = err })
			var txs []*txn
			for _, s := range tt.steps {
				switch s.do {
				case "begin":
					txs = append(txs, c.begin())
				case "produce":
					c.produced(txs[s.n])
				case "ack":
					c.acked(txs[s.n], nil)
				case "fail":
					c.acked(txs[s.n], errors.New("boom"))
				case "commit":
					c.commit(txs[s.n], pglogrepl.LSN(100*(s.n+1)))
				}
			}
			if diff := cmp.Diff(tt.confirmed, got); diff != "" {
				t.Errorf("confirmed LSNs (-want +got):\n%s", diff)
			}
			if (failed != nil) != tt.failed {
				t.Errorf("failed = %v, want failure %v", failed, tt.failed)
			}
		})
	}
}

// TestCheckpointFoldsEmptyTransactions checks that transactions producing
// nothing behind one in flight do not pile up, and are still counted and
// confirmed with it.
func TestCheckpointFoldsEmptyTransactions(t *testing.T) {
	var lsns []pglogrepl.LSN
	var counted int
	c := newCheckpoint(func(l pglogrepl.LSN, n int) { lsns = append(lsns, l); counted += n }, func(error) {})
	first := c.begin()
	c.produced(first)
	c.commit(first, 100)
	for i := range 1000 {
		e := c.begin()
		c.commit(e, pglogrepl.LSN(200+i))
	}
	if n := c.inFlight(); n != 1 {
		t.Errorf("%d transactions queued behind the one in flight, want them folded into it", n)
	}
	c.acked(first, nil)
	if want := []pglogrepl.LSN{1199}; !cmp.Equal(lsns, want) {
		t.Errorf("confirmed %v, want %v", lsns, want)
	}
	if counted != 1001 {
		t.Errorf("confirmation counted %d transactions, want 1001", counted)
	}
	// An empty transaction with nothing in flight confirms at once.
	e := c.begin()
	c.commit(e, 5000)
	if lsns[len(lsns)-1] != 5000 || counted != 1002 {
		t.Errorf("after an empty transaction: confirmed %v, counted %d", lsns, counted)
	}
}
