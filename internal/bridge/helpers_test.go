package bridge

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/testenv"
)

// writeMapping replaces the test's mapping directory with one file.
func writeMapping(t *testing.T, e *env, name, body string) {
	t.Helper()
	dir := e.cfg.Mappings[0]
	old, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range old {
		os.Remove(f)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := mapping.Load(e.cfg.Mappings)
	if err != nil {
		t.Fatal(err)
	}
	e.set = set
}

func lsnGreater(t *testing.T, a, b string) bool {
	t.Helper()
	la, err := pglogrepl.ParseLSN(a)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := pglogrepl.ParseLSN(b)
	if err != nil {
		t.Fatal(err)
	}
	return la > lb
}

// pauseKafka drops every connection to the broker, and new ones at once,
// until the returned resume is called (or the test ends).
func pauseKafka(t *testing.T) (resume func()) {
	t.Helper()
	for _, p := range broker.Proxies() {
		p.Pause()
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			for _, p := range broker.Proxies() {
				if err := p.Resume(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	t.Cleanup(resume)
	return resume
}

// waitSent waits until the walsender has sent the bridge everything
// written so far, and returns that WAL position. (The insert position:
// with asynchronous commit the write position may lag behind a commit.)
func (e *env) waitSent() string {
	e.t.Helper()
	end := e.queryString(`SELECT pg_current_wal_insert_lsn()::text`)
	sent := `SELECT coalesce((SELECT r.sent_lsn >= '` + end + `'::pg_lsn FROM pg_stat_replication r
	           JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = '` + e.db + `'), false)::text`
	if err := testenv.Eventually(context.Background(), 30*time.Second, func(context.Context) (bool, string, error) {
		return e.queryString(sent) == "true", "the walsender has not sent everything yet", nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return end
}

// confirmedLSN returns the slot's confirmed_flush_lsn.
func (e *env) confirmedLSN() string {
	e.t.Helper()
	return e.queryString(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '` + e.db + `'`)
}
