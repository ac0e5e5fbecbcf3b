package snapshot

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/mapping"
)

// jobRun is a job being run. mu guards job; saveMu orders its saves.
type jobRun struct {
	mu      sync.Mutex
	saveMu  sync.Mutex
	job     *Job
	started time.Time
	// rows read at start, per table, for the rate.
	base map[string]int64
	// cancel ends the running job; cancelled is set by a cancel that came
	// before it ran.
	cancel    context.CancelCauseFunc
	cancelled bool
}

// snapshot returns a copy of the job as it stands.
func (jr *jobRun) snapshot() *Job {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	return jr.job.clone()
}

// save writes the job as it stands; saves of one job never overtake each
// other.
func (c *Coordinator) save(ctx context.Context, jr *jobRun) error {
	jr.saveMu.Lock()
	defer jr.saveMu.Unlock()
	return c.o.Store.Save(ctx, jr.snapshot())
}

// runJob plans the job's tables, reads their ranges, reconciles its
// topics, and marks it done.
func (c *Coordinator) runJob(ctx context.Context, jr *jobRun) error {
	j := jr.job
	jr.mu.Lock()
	jr.base = map[string]int64{}
	for _, t := range j.Tables {
		jr.base[t.Table] = t.rows()
	}
	jr.mu.Unlock()
	c.log.Info("backfill started", "job", j.ID, "reason", j.Reason, "entities", j.Entities, "reconcile", j.Reconcile)

	keys := map[string]chunkKey{}
	for _, t := range j.Tables {
		maps, err := c.mapped(j, t.Entities)
		if err != nil {
			return err
		}
		table := maps[0].Table
		key, err := retry(ctx, c, func() (chunkKey, error) { return findChunkKey(ctx, c.o.Pool, table, maps[0].Key) })
		if err != nil {
			return err
		}
		keys[t.Table] = key
		if t.Planned {
			continue
		}
		est, err := retry(ctx, c, func() (int64, error) { return estimateRows(ctx, c.o.Pool, table) })
		if err != nil {
			return err
		}
		ranges, err := retry(ctx, c, func() ([]*Range, error) {
			return planRanges(ctx, c.o.Pool, table, key, est, c.o.Workers, c.o.ChunkSize)
		})
		if err != nil {
			return err
		}
		jr.mu.Lock()
		t.Estimate, t.Ranges, t.Planned = est, ranges, true
		jr.mu.Unlock()
		if err := c.save(ctx, jr); err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, t := range j.Tables {
		for _, r := range t.Ranges {
			if r.Done {
				continue
			}
			g.Go(func() error { return c.readRange(gctx, jr, t, r, keys[t.Table]) })
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}

	if j.Reconcile {
		for topic, tj := range j.Topics {
			if err := c.reconcile(ctx, jr, topic, tj); err != nil {
				return err
			}
		}
	}
	jr.mu.Lock()
	j.State, j.Finished = Done, time.Now().UTC()
	jr.mu.Unlock()
	if err := c.save(ctx, jr); err != nil {
		return err
	}
	c.log.Info("backfill done", "job", j.ID, "rows", j.Rows, "tombstones", j.Tombstones, "took", time.Since(jr.started).Round(time.Millisecond))
	return nil
}

// readRange reads one range chunk by chunk, one chunk at a time, and
// records its progress as Kafka acknowledges each chunk's records.
func (c *Coordinator) readRange(ctx context.Context, jr *jobRun, t *TableJob, r *Range, key chunkKey) error {
	maps, err := c.mapped(jr.job, t.Entities)
	if err != nil {
		return err
	}
	cr := &chunkReader{table: maps[0].Table, key: key}
	projectors := make([]*mapping.RowProjector, len(maps))
	for i, m := range maps {
		if projectors[i], err = m.RowProjector(); err != nil {
			return err
		}
	}

	// Acknowledgements are awaited in chunk order on a goroutine of their
	// own, so that the next chunk is read meanwhile; at most two chunks
	// wait.
	type pending struct {
		after []string
		rows  int64
		last  bool
		acked chan error
	}
	acks := make(chan pending, 2)
	ackErr := make(chan error, 1)
	go func() {
		defer close(ackErr)
		for p := range acks {
			var err error
			select {
			case err = <-p.acked:
			case <-ctx.Done():
				err = ctx.Err()
			}
			if err != nil {
				ackErr <- err
				for range acks {
				}
				return
			}
			jr.mu.Lock()
			r.After, r.Rows, r.Done = p.after, r.Rows+p.rows, p.last
			jr.job.Rows += p.rows
			jr.mu.Unlock()
			if err := c.save(ctx, jr); err != nil {
				ackErr <- err
				for range acks {
				}
				return
			}
		}
	}()

	after := r.After
	limit := c.o.ChunkSize
	again := 0 // reads of the same chunk in a row that the stream made void
	var runErr error
	for {
		res, next, n, err := c.chunk(ctx, cr, projectors, r, after, limit)
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == "57014" && limit > 1:
			// statement_timeout: the chunk took longer than its bound.
			limit = max(1, limit/2)
			c.log.Warn("backfill chunk took longer than the statement timeout; reading smaller chunks", "table", t.Table, "chunk_size", limit)
			continue
		case err != nil && cdc.IsTransient(err) && ctx.Err() == nil:
			c.log.Warn("backfill chunk failed; retrying", "table", t.Table, "err", err)
			if err := sleep(ctx, time.Second); err != nil {
				runErr = err
				break
			}
			continue
		case err != nil:
			runErr = err
		}
		if runErr != nil {
			break
		}
		if res.again {
			if again++; again == maxAgain {
				runErr = fmt.Errorf("backfill %s: the stream voided %d reads of the same chunk in a row (a TRUNCATE, or changes whose chunk key columns the stream does not carry); check the table's replica identity", t.Table, again)
				break
			}
			continue
		}
		again = 0
		last := n < limit
		acks <- pending{after: next, rows: int64(res.published), last: last, acked: res.acked}
		if last {
			break
		}
		after = next
	}
	close(acks)
	if err := <-ackErr; err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// maxAgain bounds the reads of one chunk that the stream voids in a row.
const maxAgain = 20

// chunk reads and publishes one chunk between its watermarks, waiting for
// a worker slot. It returns the high watermark's result, the key of the
// chunk's last row and the number of rows read.
func (c *Coordinator) chunk(ctx context.Context, cr *chunkReader, projectors []*mapping.RowProjector, r *Range, after []string, limit int) (markResult, []string, int, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return markResult{}, nil, 0, ctx.Err()
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-c.sem
		}
	}
	defer release()

	w := c.newWindow(cr.table, "", cr.key.cols)
	if _, err := emit(ctx, c.o.Pool, mark{Slot: c.o.Slot, Kind: kindLow, Run: c.run, Window: w.id}); err != nil {
		c.drop(w)
		return markResult{}, nil, 0, err
	}
	rel, rows, next, err := cr.read(ctx, c.o.Pool, r, after, limit)
	if err != nil {
		c.drop(w)
		return markResult{}, nil, 0, err
	}
	// A chunk's identities, keys and documents share a few large blocks,
	// and its records one slice: a row costs next to no allocation.
	items := make([]item, len(rows))
	recs := make([]itemRecord, 0, len(rows)*len(projectors))
	var arena []byte
	for i, row := range rows {
		size := 0
		for _, v := range row {
			size += len(v.Text)
		}
		arena = room(arena, 2*size+256)
		start := len(arena)
		arena, _ = appendIdentity(arena, row, cr.keyAt)
		items[i].id = arena[start:len(arena):len(arena)]
		first := len(recs)
		for _, rp := range projectors {
			var key, value []byte
			var in bool
			var err error
			arena, key, value, in, err = rp.Append(arena, rel, row)
			if err != nil {
				c.drop(w)
				return markResult{}, nil, 0, fmt.Errorf("backfill %s: %w", cr.table, err)
			}
			if in {
				recs = append(recs, itemRecord{m: rp.Mapping(), key: key, value: value})
			}
		}
		items[i].recs = recs[first:len(recs):len(recs)]
	}
	c.mu.Lock()
	w.items, w.ready = items, true
	c.mu.Unlock()
	if _, err := emit(ctx, c.o.Pool, mark{Slot: c.o.Slot, Kind: kindHigh, Run: c.run, Window: w.id}); err != nil {
		c.drop(w)
		return markResult{}, nil, 0, err
	}
	release() // the database work is done; the stream does the rest
	select {
	case res := <-w.result:
		return res, next, len(rows), nil
	case <-ctx.Done():
		c.drop(w)
		return markResult{}, nil, 0, ctx.Err()
	}
}

// reconcile tombstones the keys a topic holds from before the job that
// the job and the stream did not write since, in passes over buckets of
// the key space so that a pass holds at most KeysPerPass keys.
func (c *Coordinator) reconcile(ctx context.Context, jr *jobRun, topic string, tj *TopicJob) error {
	jr.mu.Lock()
	if tj.Passes == 0 {
		var before int64
		for _, s := range tj.Starts {
			before += s
		}
		// Records before the job bound the keys that were live then.
		tj.Passes = int(max(1, (before+int64(c.o.KeysPerPass)-1)/int64(c.o.KeysPerPass)))
	}
	passes, done, starts := tj.Passes, tj.Done, tj.Starts
	op := "reconcile"
	if jr.job.Reason == Truncated {
		op = "truncate"
	}
	jr.mu.Unlock()
	maps, err := c.mapped(jr.job, []string{tj.Entity})
	if err != nil {
		return err
	}
	table := maps[0].Table
	for pass := done; pass < passes; pass++ {
		n, err := c.pass(ctx, topic, starts, pass, passes, tombInfo{entity: tj.Entity, table: table, op: op})
		if err != nil {
			return err
		}
		jr.mu.Lock()
		tj.Done = pass + 1
		jr.job.Tombstones += int64(n)
		jr.mu.Unlock()
		if err := c.save(ctx, jr); err != nil {
			return err
		}
		c.log.Info("reconcile pass done", "job", jr.job.ID, "topic", topic, "pass", pass+1, "of", passes, "tombstones", n)
	}
	return nil
}

// pass runs one reconcile pass: between its watermarks it reads the
// topic, keeps the keys of its bucket that were live before the job and
// not written since, and tombstones those the stream did not write
// meanwhile. It returns the number of tombstones.
func (c *Coordinator) pass(ctx context.Context, topic string, starts []int64, pass, passes int, info tombInfo) (int, error) {
	for {
		w := c.newWindow(cdc.TableName{}, topic, nil)
		c.mu.Lock()
		w.tomb, w.pass, w.passes = info, pass, passes
		c.mu.Unlock()
		if _, err := emit(ctx, c.o.Pool, mark{Slot: c.o.Slot, Kind: kindLow, Run: c.run, Window: w.id}); err != nil {
			c.drop(w)
			return 0, err
		}
		select {
		case <-w.opened:
		case <-ctx.Done():
			c.drop(w)
			return 0, ctx.Err()
		}
		live, err := c.liveBefore(ctx, topic, starts, pass, passes)
		if err != nil {
			c.drop(w)
			return 0, err
		}
		c.mu.Lock()
		w.tombs, w.ready = live, true
		c.mu.Unlock()
		if _, err := emit(ctx, c.o.Pool, mark{Slot: c.o.Slot, Kind: kindHigh, Run: c.run, Window: w.id}); err != nil {
			c.drop(w)
			return 0, err
		}
		var res markResult
		select {
		case res = <-w.result:
		case <-ctx.Done():
			c.drop(w)
			return 0, ctx.Err()
		}
		if res.again {
			continue // a reconcile window is voided only when it never opened
		}
		select {
		case err := <-res.acked:
			return res.published, err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// liveBefore reads topic up to its current end and returns the keys of
// the pass's bucket whose last record before starts is a state, and that
// have no record at or after starts.
func (c *Coordinator) liveBefore(ctx context.Context, topic string, starts []int64, pass, passes int) ([][]byte, error) {
	ends, err := c.o.Kafka.EndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	live := map[string]struct{}{}
	err = c.o.Kafka.Scan(ctx, topic, ends, func(part int32, off int64, key, value []byte) error {
		before := int(part) < len(starts) && off < starts[part]
		switch {
		case !before:
			delete(live, string(key))
		case bucket(key, passes) != pass:
		case value == nil:
			delete(live, string(key))
		default:
			live[string(key)] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	keys := make([][]byte, 0, len(live))
	for k := range live {
		keys = append(keys, []byte(k))
	}
	return keys, nil
}

// bucket assigns a key to one of n reconcile passes.
func bucket(key []byte, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New64a()
	h.Write(key)
	return int(h.Sum64() % uint64(n))
}

// retry calls f until it succeeds, fails for good or ctx ends, waiting a
// second after each transient failure.
func retry[T any](ctx context.Context, c *Coordinator, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err == nil || !cdc.IsTransient(err) || ctx.Err() != nil {
			return v, err
		}
		c.log.Warn("backfill: source unavailable; retrying", "err", err)
		if err := sleep(ctx, time.Second); err != nil {
			return v, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// mapped returns the mappings of a job's entities, which must all still
// be mapped.
func (c *Coordinator) mapped(j *Job, entities []string) ([]*mapping.Mapping, error) {
	var maps []*mapping.Mapping
	for _, e := range entities {
		m := c.o.Set.Entity(e)
		if m == nil {
			return nil, fmt.Errorf("backfill %s: entity %q is no longer in the mappings; restore its mapping to finish the backfill", j.ID, e)
		}
		maps = append(maps, m)
	}
	if len(maps) == 0 {
		return nil, fmt.Errorf("backfill %s: no entities", j.ID)
	}
	return maps, nil
}
