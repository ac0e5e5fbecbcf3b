package pipeline

import (
	"sync"

	"github.com/jackc/pglogrepl"
)

// checkpoint tracks the records in flight per transaction and confirms the
// end LSN of the longest prefix of transactions that are committed and fully
// acknowledged. It is safe for concurrent use: acknowledgements arrive on
// the Kafka client's goroutines.
type checkpoint struct {
	confirm func(lsn pglogrepl.LSN, txns int)

	mu     sync.Mutex
	queue  []*txn // oldest first
	failed error  // first record failure; nothing is confirmed after it
	fail   func(error)
}

// txn is one source transaction in flight.
type txn struct {
	end       pglogrepl.LSN
	pending   int  // records produced and not yet acknowledged
	committed bool // the Commit message was seen: no more records will come
	folded    int  // later empty transactions this one stands for
}

// newCheckpoint returns a checkpoint that calls confirm with ever higher
// LSNs, and the number of transactions each confirmation settles, and fail
// once with the first record failure. Both are called with the
// checkpoint's lock held and must not block.
func newCheckpoint(confirm func(lsn pglogrepl.LSN, txns int), fail func(error)) *checkpoint {
	return &checkpoint{confirm: confirm, fail: fail}
}

// begin starts tracking a transaction.
func (c *checkpoint) begin() *txn {
	t := &txn{}
	c.mu.Lock()
	c.queue = append(c.queue, t)
	c.mu.Unlock()
	return t
}

// produced counts one more record of t in flight.
func (c *checkpoint) produced(t *txn) {
	c.mu.Lock()
	t.pending++
	c.mu.Unlock()
}

// acked settles one record of t: err == nil when Kafka acknowledged it.
func (c *checkpoint) acked(t *txn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t.pending--
	if err != nil && c.failed == nil {
		c.failed = err
		c.fail(err)
	}
	c.advance()
}

// commit marks t complete: all of its records have been produced, and
// once they are acknowledged the slot may confirm end. (The end LSN is
// known only from the Commit message.)
func (c *checkpoint) commit(t *txn, end pglogrepl.LSN) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t.end = end
	t.committed = true
	// A transaction that produced nothing, behind one still in flight,
	// is folded into it: confirming that one's end would be just as
	// right, so move its end forward. Without this, a stream of
	// filtered-out changes during a Kafka outage would grow the queue
	// without bound.
	if n := len(c.queue); t.pending == 0 && n >= 2 && c.queue[n-1] == t && c.queue[n-2].committed {
		prev := c.queue[n-2]
		prev.end = t.end
		prev.folded += 1 + t.folded
		c.queue[n-1] = nil
		c.queue = c.queue[:n-1]
	}
	c.advance()
}

// err returns the first record failure, or nil.
func (c *checkpoint) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// inFlight reports how many transactions are not yet confirmed.
func (c *checkpoint) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// advance confirms the end of the longest settled prefix. Called with mu held.
func (c *checkpoint) advance() {
	if c.failed != nil {
		return
	}
	n, txns := 0, 0
	for n < len(c.queue) && c.queue[n].committed && c.queue[n].pending == 0 {
		txns += 1 + c.queue[n].folded
		n++
	}
	if n == 0 {
		return
	}
	c.confirm(c.queue[n-1].end, txns)
	// Shift rather than reslice so the backing array does not grow without
	// bound over a long-running session.
	m := copy(c.queue, c.queue[n:])
	clear(c.queue[m:])
	c.queue = c.queue[:m]
}
