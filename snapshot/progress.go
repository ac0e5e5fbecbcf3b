package snapshot

import (
	"context"
	"sync"
	"time"
)

// TableProgress is how far a job's table has been read.
type TableProgress struct {
	Table    string
	Rows     int64         // rows read and acknowledged
	Estimate int64         // the planner's estimate of the table's rows; 0 when unknown
	Rate     float64       // rows per second since the job started (or resumed)
	ETA      time.Duration // to reach the estimate at that rate; 0 when unknown
	Done     bool
}

// Progress returns the progress of each table of j, for a job that has
// been running for elapsed and had base rows per table when it started.
func Progress(j *Job, elapsed time.Duration, base map[string]int64) []TableProgress {
	var out []TableProgress
	for _, t := range j.Tables {
		p := TableProgress{Table: t.Table, Rows: t.rows(), Estimate: t.Estimate, Done: t.Planned}
		for _, r := range t.Ranges {
			p.Done = p.Done && r.Done
		}
		if s := elapsed.Seconds(); s > 0 {
			p.Rate = float64(p.Rows-base[t.Table]) / s
		}
		if !p.Done && p.Rate > 0 && p.Estimate > p.Rows {
			p.ETA = time.Duration(float64(p.Estimate-p.Rows) / p.Rate * float64(time.Second)).Round(time.Second)
		}
		out = append(out, p)
	}
	return out
}

// logProgress logs a line per table of every running job every
// ProgressInterval, until the returned function is called.
func (c *Coordinator) logProgress(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(c.o.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c.mu.Lock()
			runs := make([]*jobRun, 0, len(c.jobs))
			for _, jr := range c.jobs {
				runs = append(runs, jr)
			}
			c.mu.Unlock()
			for _, jr := range runs {
				jr.mu.Lock()
				if jr.job.finished() || jr.base == nil {
					jr.mu.Unlock()
					continue
				}
				ps := Progress(jr.job, time.Since(jr.started), jr.base)
				id := jr.job.ID
				jr.mu.Unlock()
				for _, p := range ps {
					if p.Done {
						continue
					}
					c.log.Info("backfill progress", "job", id, "table", p.Table, "rows", p.Rows, "estimate", p.Estimate,
						"rows_per_s", int64(p.Rate), "eta", p.ETA)
				}
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
