package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/statefeed/statefeed/internal/yamlconf"
	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/snapshot"
)

// BackfillOptions are the choices of bridge backfill.
type BackfillOptions struct {
	// Entities to backfill; empty with Watch only watches.
	Entities []string
	// Reconcile also tombstones the keys the topic holds that the
	// backfill did not write and the stream did not touch meanwhile.
	Reconcile bool
	// Cancel, a job ID, asks the bridge to cancel that job instead.
	Cancel string
	// NoWait returns once the request is written.
	NoWait bool
	// TTY redraws the progress in place instead of printing lines.
	TTY bool
	// Interval between progress lines when not on a terminal (default 10s).
	Interval time.Duration
}

// Backfill asks the bridge streaming from the configured slot to backfill
// entities, by writing a request into the WAL, and follows the job's
// progress in the progress topic until it is done. With no entities it
// follows the running jobs (the initial snapshot, say). It returns an
// error when a job failed.
func Backfill(ctx context.Context, cfg *Config, o BackfillOptions, out io.Writer) error {
	set, err := mapping.Load(cfg.Mappings)
	if err != nil {
		return &ConfigError{err}
	}
	var names []string
	for _, m := range set.Mappings {
		names = append(names, m.Entity)
	}
	var problems []string
	for _, e := range o.Entities {
		if set.Entity(e) == nil {
			problems = append(problems, fmt.Sprintf("--entity %s: no mapping defines this entity%s; the entities are %s", e, yamlconf.DidYouMean(e, names), strings.Join(names, ", ")))
		}
	}
	if len(problems) > 0 {
		return &ConfigError{errors.New(strings.Join(problems, "\n"))}
	}

	var id string
	switch {
	case o.Cancel != "":
		if err := cancelJob(ctx, cfg, o.Cancel, out); err != nil || o.NoWait {
			return err
		}
		id = o.Cancel
	case len(o.Entities) > 0:
		id, err = request(ctx, cfg, set, o, out)
		if err != nil || o.NoWait {
			return err
		}
	}

	producer, err := newProducer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer producer.Close()
	store := snapshot.KafkaStore{Kafka: producer, Topic: cfg.progressTopic()}
	return watch(ctx, store, id, o, out)
}

// request writes the backfill request and says whether a bridge is there
// to take it.
func request(ctx context.Context, cfg *Config, set *mapping.Set, o BackfillOptions, out io.Writer) (string, error) {
	conn, err := pgx.Connect(ctx, cfg.Source.DSN)
	if err != nil {
		return "", fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var problems []string
	for _, e := range o.Entities {
		m := set.Entity(e)
		if _, err := snapshot.ChunkKey(ctx, conn, m.Table, m.Key); err != nil {
			problems = append(problems, fmt.Sprintf("--entity %s: %v", e, err))
		}
	}
	if len(problems) > 0 {
		return "", &ConfigError{errors.New(strings.Join(problems, "\n"))}
	}
	var active bool
	err = conn.QueryRow(ctx, "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", cfg.Source.Slot).Scan(&active)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", &ConfigError{fmt.Errorf("replication slot %q does not exist: start the bridge with bridge run first (a new slot starts with a snapshot of every entity unless snapshot.mode is never)", cfg.Source.Slot)}
	}
	if err != nil {
		return "", fmt.Errorf("read replication slot %q: %w", cfg.Source.Slot, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
	err = snapshot.RequestBackfill(ctx, conn, cfg.Source.Slot, snapshot.Request{ID: id, Entities: o.Entities, Reconcile: o.Reconcile})
	if err != nil {
		return "", err
	}
	fmt.Fprintf(out, "requested backfill-%s of %s (reconcile: %v)\n", id, strings.Join(o.Entities, ", "), o.Reconcile)
	if !active {
		fmt.Fprintf(out, "note: no bridge is streaming from slot %q now; the request waits in the WAL and runs when the bridge starts\n", cfg.Source.Slot)
	}
	return "backfill-" + id, nil
}

// cancelJob writes a request to cancel job id into the WAL.
func cancelJob(ctx context.Context, cfg *Config, id string, out io.Writer) error {
	conn, err := pgx.Connect(ctx, cfg.Source.DSN)
	if err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := snapshot.CancelBackfill(ctx, conn, cfg.Source.Slot, id); err != nil {
		return err
	}
	fmt.Fprintf(out, "requested the cancel of %s; what it published stays\n", id)
	return nil
}

// watch follows the job id, or with id empty every job running when it
// starts, until they are finished.
func watch(ctx context.Context, store snapshot.Store, id string, o BackfillOptions, out io.Writer) error {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	var follow []string // job IDs
	if id != "" {
		follow = []string{id}
	}
	first := map[string]*snapshot.Job{}
	seen := map[string]time.Time{}
	drawn := 0 // lines drawn last time on a terminal
	lastPrint := time.Time{}
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		jobs, err := store.Load(ctx)
		if err != nil {
			return err
		}
		if id == "" && follow == nil {
			follow = []string{}
			for _, j := range jobs {
				if j.State == snapshot.Running {
					follow = append(follow, j.ID)
				}
			}
			if len(follow) == 0 {
				fmt.Fprintln(out, "no backfill is running")
				return nil
			}
		}
		var lines []string
		finished := 0
		var shown []*snapshot.Job
		for _, j := range jobs {
			if !slices.Contains(follow, j.ID) {
				continue
			}
			if first[j.ID] == nil {
				first[j.ID], seen[j.ID] = j, time.Now()
			}
			shown = append(shown, j)
			if j.State != snapshot.Running {
				finished++
			}
			lines = append(lines, progressLines(j, first[j.ID], time.Since(seen[j.ID]))...)
		}
		if len(shown) == 0 {
			lines = append(lines, "waiting for the bridge to take the request ...")
		}
		done := len(shown) == len(follow) && finished == len(follow)
		switch {
		case o.TTY:
			if drawn > 0 {
				fmt.Fprintf(out, "\x1b[%dA", drawn)
			}
			for _, l := range lines {
				fmt.Fprintf(out, "\x1b[2K%s\n", l)
			}
			drawn = len(lines)
		case done || time.Since(lastPrint) >= o.Interval:
			for _, l := range lines {
				fmt.Fprintln(out, l)
			}
			lastPrint = time.Now()
		}
		if done {
			return summary(shown, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
}

// progressLines describes a job: a line for the job, then one per table.
func progressLines(j, first *snapshot.Job, elapsed time.Duration) []string {
	base := map[string]int64{}
	for _, p := range snapshot.Progress(first, 0, nil) {
		base[p.Table] = p.Rows
	}
	lines := []string{fmt.Sprintf("%s (%s): %s, %d rows, %d tombstones", j.ID, j.Reason, j.State, j.Rows, j.Tombstones)}
	for _, p := range snapshot.Progress(j, elapsed, base) {
		l := fmt.Sprintf("  %-30s %10d", p.Table, p.Rows)
		if p.Estimate > 0 {
			l += fmt.Sprintf(" / ~%d (%3.0f%%)", p.Estimate, min(100, 100*float64(p.Rows)/float64(p.Estimate)))
		}
		switch {
		case p.Done:
			l += "  done"
		case p.Rate > 0:
			l += fmt.Sprintf("  %.0f rows/s", p.Rate)
			if p.ETA > 0 {
				l += fmt.Sprintf("  ETA %s", p.ETA)
			}
		}
		lines = append(lines, l)
	}
	for topic, t := range j.Topics {
		if t.Passes > 0 {
			lines = append(lines, fmt.Sprintf("  reconcile %s: pass %d of %d", topic, t.Done, t.Passes))
		}
	}
	return lines
}

// summary prints how the jobs ended and fails if one failed.
func summary(jobs []*snapshot.Job, out io.Writer) error {
	var failed []string
	for _, j := range jobs {
		took := j.Finished.Sub(j.Created).Round(time.Millisecond)
		if snapshot.Cancelled(j) {
			fmt.Fprintf(out, "%s cancelled after %s: %d rows published, %d tombstones\n", j.ID, took, j.Rows, j.Tombstones)
			continue
		}
		if j.State == snapshot.Failed {
			fmt.Fprintf(out, "%s failed after %s: %s\n", j.ID, took, j.Error)
			failed = append(failed, j.ID)
			continue
		}
		fmt.Fprintf(out, "%s done in %s: %d rows published, %d tombstones\n", j.ID, took, j.Rows, j.Tombstones)
	}
	if len(failed) > 0 {
		return fmt.Errorf("backfill failed: %s", strings.Join(failed, ", "))
	}
	return nil
}
