package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/publish"
	"github.com/statefeed/statefeed/snapshot"
)

// Source is the replication side: cdc.Source satisfies it.
type Source interface {
	// Run streams changes in commit order to emit until ctx ends, emit
	// fails or the connection breaks.
	Run(ctx context.Context, emit func(context.Context, cdc.Change) error) error
	// Confirm records that everything up to lsn is published; safe for
	// concurrent use; lower LSNs are ignored.
	Confirm(lsn pglogrepl.LSN)
	// Close reports the confirmed LSN to the server and disconnects.
	Close(ctx context.Context) error
}

// Producer is the Kafka side: publish.Producer satisfies it.
type Producer interface {
	// Produce queues m and calls done once when Kafka acknowledged it or
	// it failed. It keeps m's key and value until then and nothing else
	// of m: the pipeline reuses m.
	Produce(ctx context.Context, m *publish.Message, done func(error)) error
	Flush(ctx context.Context) error
}

// Options configures a Pipeline.
type Options struct {
	Source    Source
	Projector *mapping.Projector
	Rows      mapping.RowReader // reads rows back for unchanged TOAST values
	Producer  Producer

	// Backfills, when set, handles the stream's side of backfills: their
	// watermarks, requests and TRUNCATEs under on_truncate: tombstone.
	Backfills *snapshot.Coordinator

	// SourceName names the database in ce_source
	// ("postgresql://<SourceName>/<schema>.<table>").
	SourceName string

	// ShutdownTimeout bounds how long a stop waits for Kafka to
	// acknowledge what is in flight (default 30s). What is not
	// acknowledged by then is not confirmed and is read again on restart.
	ShutdownTimeout time.Duration

	// IsTransient tells errors worth a reconnect (a lost connection) from
	// permanent ones; default cdc.IsTransient.
	IsTransient func(error) bool

	// ProgressInterval is how often Run logs a progress line (records
	// published, transactions confirmed, the confirmed LSN) while there
	// is progress to report; default 30s.
	ProgressInterval time.Duration

	Logger *slog.Logger
}

// Pipeline moves changes from a Source through the mappings to a Producer.
type Pipeline struct {
	o   Options
	log *slog.Logger

	tables map[cdc.TableName]tableNames // built on first use

	// Counters for the progress line and Stats.
	published  atomic.Int64 // records acknowledged by Kafka
	confirmed  atomic.Int64 // transactions confirmed to the slot
	lsn        atomic.Uint64
	reconnects atomic.Int64
	streaming  atomic.Bool
}

// Stats is a snapshot of what a Pipeline has done since it was created.
type Stats struct {
	RecordsPublished      int64         // records Kafka acknowledged
	TransactionsConfirmed int64         // source transactions confirmed to the slot
	ConfirmedLSN          pglogrepl.LSN // the last LSN confirmed, 0 before the first
	Reconnects            int64         // replication sessions started again after a lost connection
	Streaming             bool          // a replication session is running
}

// Stats returns the pipeline's counters. It is safe for concurrent use.
func (p *Pipeline) Stats() Stats {
	return Stats{
		RecordsPublished:      p.published.Load(),
		TransactionsConfirmed: p.confirmed.Load(),
		ConfirmedLSN:          pglogrepl.LSN(p.lsn.Load()),
		Reconnects:            p.reconnects.Load(),
		Streaming:             p.streaming.Load(),
	}
}

// New returns a Pipeline; nothing runs until Run.
func New(o Options) *Pipeline {
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.IsTransient == nil {
		o.IsTransient = cdc.IsTransient
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pipeline{o: o, log: o.Logger, tables: map[cdc.TableName]tableNames{}}
}

// Run streams until ctx ends or a permanent error occurs. A lost
// connection to PostgreSQL is retried with backoff: what is in flight is
// flushed and confirmed, and streaming resumes from the confirmed LSN.
// When ctx ends, Run stops reading, waits up to ShutdownTimeout for Kafka,
// confirms the last fully acknowledged LSN, closes the source and returns
// nil, or an error saying what Kafka did not acknowledge in time.
func (p *Pipeline) Run(ctx context.Context) error {
	stopProgress := p.logProgress()
	defer stopProgress()
	const firstBackoff = 250 * time.Millisecond
	backoff := firstBackoff
	for {
		progressed, err := p.session(ctx)
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
			return p.close()
		}
		if err != nil && !p.o.IsTransient(err) {
			_ = p.close()
			return err
		}
		if progressed {
			// The connection worked before it broke: start over rather
			// than wait as long as after repeated failures.
			backoff = firstBackoff
		}
		p.log.Warn("source unavailable; reconnecting", "err", err, "backoff", backoff)
		p.reconnects.Add(1)
		select {
		case <-ctx.Done():
			return p.close()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (p *Pipeline) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.o.Source.Close(ctx); err != nil {
		return fmt.Errorf("close source: %w", err)
	}
	return nil
}

// Causes of the end of produceCtx.
var (
	errShutdownTimeout = errors.New("shutdown timeout")
	errRecordFailed    = errors.New("a record failed")
)

// session runs one replication connection to its end, then flushes what is
// in flight so that its checkpoint settles before the next session starts.
// progressed reports whether any change was received.
func (p *Pipeline) session(ctx context.Context) (progressed bool, err error) {
	readCtx, stopReading := context.WithCancelCause(ctx)
	defer stopReading(nil)

	// Records are produced with a context that outlives the stop of
	// reading, so that what is in flight can still be flushed:
	//   - after a lost source connection, for as long as Kafka needs;
	//   - when the bridge is asked to stop (ctx ends), for ShutdownTimeout;
	//   - after a record failed for good, not at all: nothing after it
	//     will be confirmed anyway.
	// Cancelling it makes produce calls blocked on a full buffer return
	// and fails unsent records. They are not confirmed, so the next start
	// reads them again.
	produceCtx, stopProducing := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopProducing(nil)
	var timer *time.Timer
	var timerMu sync.Mutex
	defer func() { // runs after the AfterFunc below is unregistered
		timerMu.Lock()
		if timer != nil {
			timer.Stop()
		}
		timerMu.Unlock()
	}()
	defer context.AfterFunc(ctx, func() {
		timerMu.Lock()
		timer = time.AfterFunc(p.o.ShutdownTimeout, func() { stopProducing(errShutdownTimeout) })
		timerMu.Unlock()
	})()

	cp := newCheckpoint(func(lsn pglogrepl.LSN, txns int) {
		p.confirmed.Add(int64(txns))
		p.lsn.Store(uint64(lsn))
		p.o.Source.Confirm(lsn)
	}, func(err error) {
		if context.Cause(produceCtx) != nil {
			return // a failure we caused by cancelling; reported below
		}
		stopReading(err)
		stopProducing(errRecordFailed)
	})

	s := &stream{p: p, cp: cp, produceCtx: produceCtx}
	p.streaming.Store(true)
	runErr := p.o.Source.Run(readCtx, s.emit)
	p.streaming.Store(false)
	stopReading(nil)
	progressed = s.changes > 0
	if n := cp.inFlight(); n > 0 && runErr != nil && !errors.Is(runErr, context.Canceled) {
		// Say so now: with Kafka down the flush below can take long.
		p.log.Warn("stream ended; waiting for Kafka to acknowledge what is in flight", "err", runErr, "transactions", n)
	}
	flushErr := p.o.Producer.Flush(produceCtx)

	if errors.Is(context.Cause(produceCtx), errShutdownTimeout) && cp.inFlight() > 0 {
		err := fmt.Errorf("stop: Kafka did not acknowledge %d transactions within %s; they are not confirmed and will be read again on the next start",
			cp.inFlight(), p.o.ShutdownTimeout)
		if runErr != nil && !errors.Is(runErr, context.Canceled) {
			err = fmt.Errorf("%w; the stream had ended with: %w", err, runErr)
		}
		return progressed, err
	}
	if recErr := cp.err(); recErr != nil && errors.Is(context.Cause(produceCtx), errRecordFailed) {
		return progressed, fmt.Errorf("publish: %w", recErr)
	}
	if runErr != nil {
		return progressed, runErr
	}
	return progressed, flushErr
}

// stream is the state of one session's emit callback. emit is called from
// a single goroutine, in commit order.
type stream struct {
	p          *Pipeline
	cp         *checkpoint
	produceCtx context.Context

	tx      *cdc.Tx
	lsnText string // the transaction's commit LSN as text, for ce_id
	cur     *txn
	ack     func(error) // settles a record of cur: one closure a transaction, not one a record
	recs    []mapping.Record
	msg     publish.Message // reused for every record
	changes int             // changes received, Begin and Commit included
}

func (s *stream) emit(ctx context.Context, c cdc.Change) error {
	s.changes++
	switch c.Op {
	case cdc.Begin:
		s.tx = c.Tx
		s.lsnText = c.Tx.CommitLSN.String()
		t := s.cp.begin()
		s.cur = t
		s.ack = func(err error) {
			if err == nil {
				s.p.published.Add(1)
			}
			s.cp.acked(t, err)
		}
		return nil
	case cdc.Commit:
		if s.cur == nil {
			return fmt.Errorf("commit at %s without begin", c.Tx.EndLSN)
		}
		s.cp.commit(s.cur, c.Tx.EndLSN)
		s.cur, s.tx, s.ack = nil, nil, nil
		return nil
	}
	bf := s.p.o.Backfills
	if c.Op == cdc.Message {
		if bf == nil || !snapshot.Ours(&c) {
			return nil // someone else's message
		}
		return s.mark(ctx, &c)
	}
	if s.cur == nil {
		return fmt.Errorf("%s outside a transaction", c.Op)
	}
	if bf != nil {
		bf.Observe(&c)
	}
	recs, err := s.p.o.Projector.Project(ctx, &c, s.p.o.Rows, s.recs[:0])
	s.recs = recs
	if err != nil {
		return err
	}
	if c.Op == cdc.Truncate && bf != nil {
		return bf.Truncate(ctx, &c, s.flush)
	}
	if len(recs) == 0 {
		return nil
	}
	tbl := s.p.table(c.Relation.Table)
	for i := range recs {
		r := &recs[i]
		m := s.message(c.Seq, i, tbl, r.Entity, c.Op.String())
		m.Topic, m.Key, m.Value = r.Topic, r.Key, r.Value
		if err := s.produce(m, s.ack); err != nil {
			return err
		}
	}
	return nil
}

// mark hands a message of ours to the backfills and publishes what it
// returns at this point of the stream, as part of its transaction.
func (s *stream) mark(ctx context.Context, c *cdc.Change) error {
	if s.cur == nil {
		return fmt.Errorf("%s outside a transaction", c.Op)
	}
	recs, err := s.p.o.Backfills.Mark(ctx, c, s.flush)
	if err != nil {
		return err
	}
	// The records of one target share their headers' table names and an
	// acknowledgement callback, made once rather than per record.
	var (
		last *snapshot.Target
		tbl  tableNames
		ack  func(error)
	)
	for i, r := range recs {
		if r.Target != last {
			last, tbl = r.Target, s.p.table(r.Table)
			settle, done := s.ack, r.Done
			ack = func(err error) {
				settle(err)
				done(err)
			}
		}
		m := s.message(c.Seq, i, tbl, r.Entity, r.Op)
		m.Topic, m.Key, m.Value = r.Topic, r.Key, r.Value
		if err := s.produce(m, ack); err != nil {
			for _, r := range recs[i:] {
				r.Done(err)
			}
			return err
		}
	}
	return nil
}

// message returns the stream's message, reused for every record (Produce
// keeps nothing of it), with the headers of record n of change seq of the
// current transaction.
func (s *stream) message(seq, n int, tbl tableNames, entity, op string) *publish.Message {
	s.msg = publish.Message{
		ID:     s.eventID(seq, n),
		Source: tbl.source,
		Type:   entity,
		Time:   s.tx.CommitTime,
		LSN:    s.tx.CommitLSN,
		XID:    s.tx.XID,
		Table:  tbl.name,
		Op:     op,
	}
	return &s.msg
}

// produce publishes m as part of the current transaction; ack learns the
// outcome and settles the record in the checkpoint (s.ack, or a function
// that calls it).
func (s *stream) produce(m *publish.Message, ack func(error)) error {
	t := s.cur
	s.cp.produced(t)
	if err := s.p.o.Producer.Produce(s.produceCtx, m, ack); err != nil {
		s.cp.acked(t, nil) // never produced: nothing to wait for, and the error stops the session
		return fmt.Errorf("publish %s record for table %s at %s: %w", m.Type, m.Table, s.tx.CommitLSN, err)
	}
	if bf := s.p.o.Backfills; bf != nil {
		bf.Published(m.Topic, m.Key)
	}
	return nil
}

// flush waits until Kafka acknowledged every record published so far.
func (s *stream) flush(ctx context.Context) error {
	if err := s.p.o.Producer.Flush(ctx); err != nil {
		return err
	}
	if err := s.cp.err(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// eventID derives ce_id from the position of the change in the WAL: the
// commit LSN of its transaction, the ordinal of the change within it and
// the ordinal of the record among those the change produced. Replaying the
// same WAL yields the same IDs.
func (s *stream) eventID(seq, n int) string {
	var buf [64]byte // on the stack: only the string is allocated
	b := append(buf[:0], s.lsnText...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(n), 10)
	return string(b)
}

// tableNames are the per-table header values, built once per table.
type tableNames struct {
	name   string // ce_table: schema.table
	source string // ce_source: postgresql://<source name>/<schema>.<table>
}

// table returns the header values of a table.
func (p *Pipeline) table(t cdc.TableName) tableNames {
	names, ok := p.tables[t]
	if !ok {
		names = tableNames{name: t.String(), source: "postgresql://" + p.o.SourceName + "/" + t.String()}
		p.tables[t] = names
	}
	return names
}

// logProgress logs a progress line every ProgressInterval while records
// are published or transactions confirmed, until the returned function is
// called.
func (p *Pipeline) logProgress() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(p.o.ProgressInterval)
		defer t.Stop()
		var lastPublished, lastConfirmed int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			published, confirmed := p.published.Load(), p.confirmed.Load()
			if published == lastPublished && confirmed == lastConfirmed {
				continue
			}
			p.log.Info("progress",
				"records", published-lastPublished,
				"transactions", confirmed-lastConfirmed,
				"lsn", pglogrepl.LSN(p.lsn.Load()),
				"interval", p.o.ProgressInterval)
			lastPublished, lastConfirmed = published, confirmed
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
