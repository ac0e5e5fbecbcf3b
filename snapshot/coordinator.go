// Package snapshot reads tables into their topics while the stream goes
// on: the initial snapshot, backfills asked for with bridge backfill, and
// the reconcile that tombstones what a topic holds and the table does not.
//
// Every read is a chunk bracketed by two watermarks written into the WAL
// (the DBLog algorithm): the stream opens a window at the low watermark,
// notes the rows that change while it is open, and at the high watermark
// publishes the chunk's rows less those, which the stream has already
// published in a newer state. The chunk's records are thus published at
// one point of the stream, in order with its changes, and the slot moves
// past the high watermark only once Kafka acknowledged them.
package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/mapping"
)

// Options configures a Coordinator. Zero values take the documented
// defaults.
type Options struct {
	Slot string       // the bridge's slot: marks written for other slots are not ours
	Set  *mapping.Set // checked mappings
	// Pool reads chunks and writes watermarks. Its connections must carry
	// cdc.SetTextFormat's settings, and should carry a statement_timeout:
	// it bounds how long a chunk's transaction may stay open.
	Pool  *pgxpool.Pool
	Kafka Kafka // end offsets and scans of the entity topics
	Store Store // where jobs are kept

	Workers          int           // chunks read at once, across tables and ranges (default 2)
	ChunkSize        int           // rows a chunk reads at most (default 4096)
	KeysPerPass      int           // keys a reconcile pass holds in memory at most (default 500,000)
	ProgressInterval time.Duration // how often running jobs log their progress (default 30s)

	Logger *slog.Logger
}

// Record is a record a watermark publishes: a chunk's row or a reconcile
// tombstone (Value nil).
type Record struct {
	Key   []byte
	Value []byte
	*Target
}

// Target is what the records of one entity published at one watermark
// share.
type Target struct {
	Topic  string
	Entity string
	Table  cdc.TableName
	Op     string // ce_op: "snapshot", "reconcile" or "truncate"
	// Done must be called once per record with the outcome of producing it.
	Done func(error)
}

// Coordinator runs backfill jobs and handles their watermarks in the
// stream. Observe, Published, Mark and Truncate are called by the pipeline
// from its single goroutine, in stream order; Run runs the jobs.
type Coordinator struct {
	o   Options
	log *slog.Logger
	run string // this process's ID in watermarks: older ones are stale

	mu      sync.Mutex
	windows map[uint64]*window
	next    uint64
	jobs    map[string]*jobRun
	queued  []*jobRun     // started, not yet taken by Run
	wake    chan struct{} // a job was queued
	open    atomic.Int32  // windows between their watermarks
	sem     chan struct{}
}

// New returns a Coordinator; nothing runs until Run.
func New(o Options) *Coordinator {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 4096
	}
	if o.KeysPerPass <= 0 {
		o.KeysPerPass = 500_000
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &Coordinator{
		o:       o,
		log:     o.Logger,
		run:     hex.EncodeToString(id[:]),
		windows: map[uint64]*window{},
		jobs:    map[string]*jobRun{},
		wake:    make(chan struct{}, 1),
		sem:     make(chan struct{}, o.Workers),
	}
}

// window is one chunk or reconcile pass between its watermarks.
type window struct {
	id    uint64
	table cdc.TableName // a chunk's table
	topic string        // a reconcile pass's topic
	// A reconcile pass notes only the keys of its bucket, so that what it
	// holds stays within its share of the key space.
	pass, passes int

	opened chan struct{} // closed when the stream reached the low watermark
	isOpen bool
	// While open: the identities (chunk) or keys (reconcile) the stream
	// changed, and whether the table was truncated or a change could not
	// be matched (both make the chunk read again).
	seen      map[string]struct{}
	truncated bool
	unmatched bool

	keyCols []string // a chunk's key columns, to match the stream's rows
	keyAt   map[*cdc.Relation][]int
	items   []item   // a chunk's rows, set before the high watermark
	tombs   [][]byte // a pass's candidate keys, set before the high watermark
	tomb    tombInfo
	ready   bool

	result chan markResult // receives once, at the high watermark
}

// item is one row of a chunk: its identity and its records.
type item struct {
	id   []byte
	recs []itemRecord
}

type itemRecord struct {
	m          *mapping.Mapping
	key, value []byte
}

type tombInfo struct {
	entity string
	table  cdc.TableName
	op     string
}

// markResult is what the high watermark did with a window.
type markResult struct {
	again     bool // the window did not see all of the stream: read the chunk again
	published int
	dropped   int
	acked     chan error // receives once all published records are acknowledged
}

// newWindow registers a window before its low watermark is written.
func (c *Coordinator) newWindow(table cdc.TableName, topic string, keyCols []string) *window {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	w := &window{id: c.next, table: table, topic: topic, keyCols: keyCols,
		opened: make(chan struct{}), seen: map[string]struct{}{}, keyAt: map[*cdc.Relation][]int{}, result: make(chan markResult, 1)}
	c.windows[w.id] = w
	return w
}

// drop forgets a window whose watermarks will not come (the job stopped).
func (c *Coordinator) drop(w *window) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.windows[w.id] == w {
		delete(c.windows, w.id)
		if w.isOpen {
			c.open.Add(-1)
		}
	}
}

// Observe notes a row change or a TRUNCATE in the open chunk windows of its
// table.
func (c *Coordinator) Observe(ch *cdc.Change) {
	if c.open.Load() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.windows {
		if !w.isOpen || w.keyCols == nil {
			continue
		}
		switch ch.Op {
		case cdc.Truncate:
			for _, rel := range ch.Truncated {
				if rel.Table == w.table {
					w.truncated = true
				}
			}
		case cdc.Insert, cdc.Update, cdc.Delete:
			if ch.Relation.Table != w.table {
				continue
			}
			at, ok := w.keyAt[ch.Relation]
			if !ok {
				at = make([]int, len(w.keyCols))
				for i, col := range w.keyCols {
					at[i] = ch.Relation.ColumnIndex(col)
				}
				w.keyAt[ch.Relation] = at
			}
			if ch.Old != nil {
				w.note(ch.Old, at)
			}
			if ch.Op != cdc.Delete {
				w.note(ch.New, at)
			} else if ch.Old == nil {
				w.unmatched = true
			}
		}
	}
}

func (w *window) note(row []cdc.Value, at []int) {
	for _, i := range at {
		if i < 0 {
			w.unmatched = true
			return
		}
	}
	id, ok := identity(row, at)
	if !ok {
		w.unmatched = true
		return
	}
	w.seen[id] = struct{}{}
}

// Published notes a record published to topic in the open reconcile
// windows of that topic.
func (c *Coordinator) Published(topic string, key []byte) {
	if c.open.Load() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.windows {
		if w.isOpen && w.topic == topic && bucket(key, w.passes) == w.pass {
			w.seen[string(key)] = struct{}{}
		}
	}
}

// Ours reports whether a logical decoding message may be for the
// Coordinator: transactional, with the bridge's prefix.
func Ours(ch *cdc.Change) bool {
	return ch.Op == cdc.Message && ch.Tx != nil && ch.Prefix == Prefix
}

// Mark handles a message of ours (see Ours) and returns the records to
// publish at its place in the stream, in its transaction. flush waits
// until Kafka acknowledged everything published so far.
func (c *Coordinator) Mark(ctx context.Context, ch *cdc.Change, flush func(context.Context) error) ([]Record, error) {
	var m mark
	if err := json.Unmarshal(ch.Content, &m); err != nil || m.Slot != c.o.Slot {
		return nil, nil // not for this bridge
	}
	switch m.Kind {
	case kindRequest:
		if m.Request == nil {
			return nil, nil
		}
		return nil, c.request(ctx, *m.Request)
	case kindCancel:
		if m.Request != nil {
			c.cancelJob(m.Request.ID)
		}
		return nil, nil
	case kindLow, kindHigh:
		if m.Run != c.run {
			return nil, nil // a watermark of an earlier run of the bridge
		}
	default:
		return nil, nil
	}
	c.mu.Lock()
	w := c.windows[m.Window]
	c.mu.Unlock()
	if w == nil {
		return nil, nil // replayed after the window closed
	}
	if m.Kind == kindLow {
		if w.isOpen {
			return nil, nil // replayed after a reconnect: the window goes on
		}
		if w.topic != "" {
			// A reconcile pass reads the topic after its low watermark:
			// everything published before it must be there to read.
			if err := flush(ctx); err != nil {
				return nil, err
			}
		}
		c.mu.Lock()
		w.isOpen = true
		c.open.Add(1)
		c.mu.Unlock()
		close(w.opened)
		return nil, nil
	}
	return c.high(w), nil
}

// high closes w at its high watermark and returns what it publishes.
func (c *Coordinator) high(w *window) []Record {
	c.mu.Lock()
	delete(c.windows, w.id)
	wasOpen, ready := w.isOpen, w.ready
	if wasOpen {
		c.open.Add(-1)
	}
	c.mu.Unlock()
	if !wasOpen || !ready || w.unmatched || w.truncated {
		// The stream did not show the window whole, or a row could not
		// be matched, or the table was truncated under the chunk: the
		// chunk is read again after a new low watermark.
		w.result <- markResult{again: true}
		return nil
	}
	var recs []Record
	res := markResult{}
	ack := &acks{done: make(chan error, 1)}
	if w.topic == "" {
		recs = make([]Record, 0, len(w.items))
		var targets []*Target // one per mapping, in the order first met
		target := func(m *mapping.Mapping) *Target {
			for _, t := range targets {
				if t.Entity == m.Entity {
					return t
				}
			}
			t := &Target{Topic: m.Topic, Entity: m.Entity, Table: w.table, Op: "snapshot", Done: ack.one}
			targets = append(targets, t)
			return t
		}
		changes := len(w.seen) > 0 // most windows see no change of the table
		for _, it := range w.items {
			if changes {
				if _, changed := w.seen[string(it.id)]; changed {
					res.dropped++
					continue
				}
			}
			for _, r := range it.recs {
				recs = append(recs, Record{Key: r.key, Value: r.value, Target: target(r.m)})
			}
		}
	} else {
		t := &Target{Topic: w.topic, Entity: w.tomb.entity, Table: w.tomb.table, Op: w.tomb.op, Done: ack.one}
		for _, k := range w.tombs {
			if _, changed := w.seen[string(k)]; changed {
				res.dropped++
				continue
			}
			recs = append(recs, Record{Key: k, Target: t})
		}
	}
	res.published = len(recs)
	ack.pending.Store(int64(len(recs)))
	if len(recs) == 0 {
		ack.done <- nil
	}
	res.acked = ack.done
	w.result <- res
	return recs
}

// acks counts the acknowledgements of a window's records.
type acks struct {
	pending atomic.Int64
	failed  atomic.Bool
	done    chan error
}

func (a *acks) one(err error) {
	if err != nil {
		if a.failed.CompareAndSwap(false, true) {
			a.done <- err
		}
		return
	}
	if a.pending.Add(-1) == 0 && !a.failed.Load() {
		a.done <- nil
	}
}

// Truncate handles a TRUNCATE: for every mapping of a truncated table that
// says on_truncate: tombstone, it starts a job that tombstones the keys
// its topic holds from before the TRUNCATE. flush waits until everything
// published before it is acknowledged, so that the topic's end offsets
// divide before from after.
func (c *Coordinator) Truncate(ctx context.Context, ch *cdc.Change, flush func(context.Context) error) error {
	var entities []string
	for _, rel := range ch.Truncated {
		for _, m := range c.o.Set.OfTable(rel.Table) {
			if m.OnTruncate == mapping.TruncateTombstone {
				entities = append(entities, m.Entity)
			}
		}
	}
	if len(entities) == 0 {
		return nil
	}
	id := fmt.Sprintf("truncate-%s-%d", ch.Tx.CommitLSN, ch.Seq)
	c.mu.Lock()
	_, known := c.jobs[id]
	c.mu.Unlock()
	if known {
		return nil // replayed: the job exists
	}
	if err := flush(ctx); err != nil {
		return err
	}
	j, err := c.newJob(ctx, id, Truncated, entities, true, false)
	if err != nil {
		return err
	}
	c.log.Info("truncate: tombstoning the truncated entities", "job", id, "entities", strings.Join(entities, ","))
	return c.start(ctx, j)
}

// request turns a backfill request read from the stream into a job.
func (c *Coordinator) request(ctx context.Context, r Request) error {
	id := "backfill-" + r.ID
	c.mu.Lock()
	_, known := c.jobs[id]
	c.mu.Unlock()
	if known || r.ID == "" {
		return nil
	}
	refuse := func(why string) error {
		now := time.Now().UTC()
		j := &Job{ID: id, Reason: Requested, Entities: r.Entities, State: Failed, Created: now, Finished: now, Error: why}
		c.log.Error("backfill request refused", "job", id, "err", why)
		c.mu.Lock()
		c.jobs[id] = &jobRun{job: j}
		c.mu.Unlock()
		return c.o.Store.Save(ctx, j)
	}
	for _, e := range r.Entities {
		m := c.o.Set.Entity(e)
		if m == nil {
			return refuse(fmt.Sprintf("no mapping defines entity %q", e))
		}
		if _, err := findChunkKey(ctx, c.o.Pool, m.Table, m.Key); err != nil {
			if cdc.IsTransient(err) {
				return err
			}
			return refuse(err.Error())
		}
	}
	j, err := c.newJob(ctx, id, Requested, r.Entities, r.Reconcile, true)
	if err != nil {
		return err
	}
	c.log.Info("backfill requested", "job", id, "entities", strings.Join(r.Entities, ","), "reconcile", r.Reconcile)
	return c.start(ctx, j)
}

// Prepare creates and saves a job for the named entities (every mapped
// entity when none are named), to be run by the next Coordinator that
// resumes from the store. With reconcile, the job records where its topics
// end now: what is below is older than the job. It needs o.Set, o.Kafka
// and o.Store.
func Prepare(ctx context.Context, o Options, id string, reason Reason, entities []string, reconcile bool) (*Job, error) {
	if len(entities) == 0 {
		for _, m := range o.Set.Mappings {
			entities = append(entities, m.Entity)
		}
	}
	return prepare(ctx, o, id, reason, entities, reconcile, true)
}

func (c *Coordinator) newJob(ctx context.Context, id string, reason Reason, entities []string, reconcile, read bool) (*Job, error) {
	return prepare(ctx, c.o, id, reason, entities, reconcile, read)
}

// prepare creates and saves a job; read says whether it reads tables or
// only reconciles.
func prepare(ctx context.Context, o Options, id string, reason Reason, entities []string, reconcile, read bool) (*Job, error) {
	j := &Job{ID: id, Reason: reason, Entities: entities, Reconcile: reconcile, State: Running, Created: time.Now().UTC()}
	byTable := map[cdc.TableName]*TableJob{}
	for _, e := range entities {
		m := o.Set.Entity(e)
		if m == nil {
			return nil, fmt.Errorf("backfill %s: no mapping defines entity %q", id, e)
		}
		if read {
			t := byTable[m.Table]
			if t == nil {
				t = &TableJob{Table: m.Table.String()}
				byTable[m.Table] = t
				j.Tables = append(j.Tables, t)
			}
			t.Entities = append(t.Entities, e)
		}
		if reconcile {
			starts, err := o.Kafka.EndOffsets(ctx, m.Topic)
			if err != nil {
				return nil, fmt.Errorf("backfill %s: %w", id, err)
			}
			if j.Topics == nil {
				j.Topics = map[string]*TopicJob{}
			}
			j.Topics[m.Topic] = &TopicJob{Entity: e, Table: m.Table.String(), Starts: starts}
		}
	}
	if err := o.Store.Save(ctx, j); err != nil {
		return nil, err
	}
	return j, nil
}

// Resume loads the jobs kept in the store and queues the unfinished ones;
// call it before Run. It returns every job loaded.
func (c *Coordinator) Resume(ctx context.Context) ([]*Job, error) {
	jobs, err := c.o.Store.Load(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if j.finished() {
			c.mu.Lock()
			c.jobs[j.ID] = &jobRun{job: j}
			c.mu.Unlock()
			continue
		}
		if err := c.start(ctx, j); err != nil {
			return nil, err
		}
	}
	return jobs, nil
}

// start queues a job for Run; it never blocks.
func (c *Coordinator) start(_ context.Context, j *Job) error {
	jr := &jobRun{job: j, started: time.Now()}
	c.mu.Lock()
	c.jobs[j.ID] = jr
	c.queued = append(c.queued, jr)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// Run runs queued jobs, several at once, until ctx ends (nil) or a job
// fails for good (its error). A failed job stays unfinished in the store,
// so the next start tries it again.
func (c *Coordinator) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	stopProgress := c.logProgress(ctx)
	defer stopProgress()
	for {
		select {
		case <-ctx.Done():
			if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		case <-c.wake:
			c.mu.Lock()
			queued := c.queued
			c.queued = nil
			c.mu.Unlock()
			for _, jr := range queued {
				wg.Go(func() {
					if err := c.runCancellable(ctx, jr); err != nil && ctx.Err() == nil {
						cancel(err)
					}
				})
			}
		}
	}
}

// errCancelled ends a job cancelled with bridge backfill --cancel.
var errCancelled = errors.New("cancelled with bridge backfill --cancel")

// Cancelled reports whether j ended because it was cancelled.
func Cancelled(j *Job) bool { return j.State == Failed && j.Error == errCancelled.Error() }

// cancelJob cancels a job that is not finished; it does not block.
func (c *Coordinator) cancelJob(id string) {
	c.mu.Lock()
	jr := c.jobs[id]
	c.mu.Unlock()
	if jr == nil {
		c.log.Warn("backfill cancel: no such job", "job", id)
		return
	}
	jr.mu.Lock()
	defer jr.mu.Unlock()
	if jr.job.finished() {
		return
	}
	jr.cancelled = true
	if jr.cancel != nil {
		jr.cancel(errCancelled)
	}
}

// runCancellable runs a job that cancelJob can end: a cancelled job is
// saved as failed, and the bridge goes on.
func (c *Coordinator) runCancellable(ctx context.Context, jr *jobRun) error {
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jr.mu.Lock()
	jr.cancel = cancel
	if jr.cancelled {
		cancel(errCancelled)
	}
	jr.mu.Unlock()
	err := c.runJob(jctx, jr)
	if !errors.Is(context.Cause(jctx), errCancelled) || ctx.Err() != nil {
		return err
	}
	jr.mu.Lock()
	jr.job.State, jr.job.Error, jr.job.Finished = Failed, errCancelled.Error(), time.Now().UTC()
	jr.mu.Unlock()
	c.log.Warn("backfill cancelled", "job", jr.job.ID)
	return c.save(ctx, jr)
}

// Jobs returns a copy of every job the Coordinator knows, oldest first.
func (c *Coordinator) Jobs() []*Job {
	c.mu.Lock()
	runs := make([]*jobRun, 0, len(c.jobs))
	for _, jr := range c.jobs {
		runs = append(runs, jr)
	}
	c.mu.Unlock()
	jobs := make([]*Job, 0, len(runs))
	for _, jr := range runs {
		jobs = append(jobs, jr.snapshot())
	}
	slices.SortFunc(jobs, func(a, b *Job) int { return a.Created.Compare(b.Created) })
	return jobs
}
