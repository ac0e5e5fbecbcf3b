package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/testenv"
)

// run is one Source.Run in the background, its changes collected.
type run struct {
	changes chan cdc.Change
	done    chan error
	cancel  context.CancelFunc
}

func startRun(src *cdc.Source) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{changes: make(chan cdc.Change, 100000), done: make(chan error, 1), cancel: cancel}
	go func() {
		r.done <- src.Run(ctx, func(ctx context.Context, c cdc.Change) error {
			select {
			case r.changes <- c:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return r
}

// next waits for n changes.
func (r *run) next(t *testing.T, n int) []cdc.Change {
	t.Helper()
	var got []cdc.Change
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case c := <-r.changes:
			got = append(got, c)
		case err := <-r.done:
			t.Fatalf("Run returned %v after %d of %d changes", err, len(got), n)
		case <-timeout:
			t.Fatalf("timed out after %d of %d changes", len(got), n)
		}
	}
	return got
}

// stop cancels the run and returns what Run returned.
func (r *run) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
		return nil
	}
}

// newSource returns a Source on the "bridge" slot and publication, closed
// when the test ends.
func newSource(t *testing.T, p *testenv.Postgres, db string, interval time.Duration) *cdc.Source {
	src := cdc.NewSource(cdc.SourceOptions{
		ConnString: p.DSN(db), Slot: "bridge", Publication: "bridge",
		StatusInterval: interval, Buffer: 16,
	})
	t.Cleanup(func() { src.Close(context.Background()) })
	return src
}

// summary renders a change without its transaction, for comparisons.
func summary(c cdc.Change) string {
	switch c.Op {
	case cdc.Begin, cdc.Commit:
		return c.Op.String()
	case cdc.Truncate:
		var names []string
		for _, r := range c.Truncated {
			names = append(names, r.Table.String())
		}
		return "truncate " + strings.Join(names, ",")
	}
	s := c.Op.String() + " " + c.Relation.Table.String()
	if c.Old != nil {
		s += " old=" + values(c.Old)
	}
	if c.New != nil {
		s += " new=" + values(c.New)
	}
	return s
}

func values(vals []cdc.Value) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		switch v.Kind {
		case cdc.Absent:
			parts[i] = "-"
		case cdc.Null:
			parts[i] = "NULL"
		case cdc.Unchanged:
			parts[i] = "UNCHANGED"
		default:
			parts[i] = string(v.Text)
		}
	}
	return strings.Join(parts, "|")
}

func summaries(cs []cdc.Change) []string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = summary(c)
	}
	return s
}

// xid runs sql in one transaction and returns its transaction ID.
func xid(t *testing.T, p *testenv.Postgres, db, sql string) uint32 {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, p, db)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := tx.QueryRow(ctx, "SELECT txid_current()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return uint32(id)
}

func TestSourceStreamsInCommitOrder(t *testing.T) {
	db := newDB(t, pg, `
		CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(6,2), tags text[]);
		CREATE TABLE audit (at timestamptz, what text);
		ALTER TABLE audit REPLICA IDENTITY FULL;`)
	setup(t, pg, db, public("items"), public("audit"))
	src := newSource(t, pg, db, 0)
	r := startRun(src)

	x1 := xid(t, pg, db, `INSERT INTO items VALUES (1, 'pen', 1.50, '{a,"b c"}'), (2, NULL, 2, NULL)`)
	x2 := xid(t, pg, db, `UPDATE items SET name = 'ink pen' WHERE id = 1; UPDATE items SET id = 3 WHERE id = 2;
		INSERT INTO audit VALUES ('2024-05-01 12:00:00+02', 'x')`)
	x3 := xid(t, pg, db, `DELETE FROM items WHERE id = 1; UPDATE audit SET what = 'y'; DELETE FROM audit`)
	x4 := xid(t, pg, db, `TRUNCATE items, audit`)

	got := r.next(t, 17)
	want := []string{
		"begin",
		"insert public.items new=1|pen|1.50|{a,\"b c\"}",
		"insert public.items new=2|NULL|2.00|NULL",
		"commit",
		"begin",
		"update public.items new=1|ink pen|1.50|{a,\"b c\"}",
		"update public.items old=2|-|-|- new=3|NULL|2.00|NULL",
		"insert public.audit new=2024-05-01 10:00:00+00|x",
		"commit",
		"begin",
		"delete public.items old=1|-|-|-",
		"update public.audit old=2024-05-01 10:00:00+00|x new=2024-05-01 10:00:00+00|y",
		"delete public.audit old=2024-05-01 10:00:00+00|y",
		"commit",
		"begin",
		"truncate public.items,public.audit",
		"commit",
	}
	if diff := cmp.Diff(want, summaries(got)); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}

	// Transactions: one Tx per transaction, in commit order, with its XID,
	// and Seq numbering the row changes.
	var (
		xids    []uint32
		prevEnd pglogrepl.LSN
		tx      *cdc.Tx
		seq     int
	)
	for i, c := range got {
		switch c.Op {
		case cdc.Begin:
			tx, seq = c.Tx, 0
			xids = append(xids, c.Tx.XID)
			if time.Since(c.Tx.CommitTime) > time.Minute || c.Tx.CommitTime.After(time.Now()) {
				t.Errorf("change %d: commit time %s is not recent", i, c.Tx.CommitTime)
			}
		case cdc.Commit:
			if c.Tx != tx || c.Seq != seq {
				t.Errorf("change %d: commit has Tx %p Seq %d, want %p and %d", i, c.Tx, c.Seq, tx, seq)
			}
			if c.Tx.EndLSN <= c.Tx.CommitLSN || c.Tx.CommitLSN < prevEnd {
				t.Errorf("change %d: commit %s end %s after previous end %s", i, c.Tx.CommitLSN, c.Tx.EndLSN, prevEnd)
			}
			prevEnd = c.Tx.EndLSN
		default:
			if c.Tx != tx || c.Seq != seq {
				t.Errorf("change %d: Tx %p Seq %d, want %p and %d", i, c.Tx, c.Seq, tx, seq)
			}
			seq++
		}
	}
	if diff := cmp.Diff([]uint32{x1, x2, x3, x4}, xids); diff != "" {
		t.Errorf("transaction IDs (-want +got):\n%s", diff)
	}

	if err := r.stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
}

func TestSourceUnchangedToastAndRowReader(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, pg, `
		CREATE TABLE docs (id int PRIMARY KEY, title text, body text, at timestamptz, n float8);
		INSERT INTO docs VALUES (1, 'a', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 32768) i),
			'2024-05-01 12:00:00.5+02', 0.1);`)
	setup(t, pg, db, public("docs"))
	src := newSource(t, pg, db, 0)
	r := startRun(src)
	defer r.stop(t)

	exec(t, pg, db, `UPDATE docs SET title = 'b' WHERE id = 1`)
	got := r.next(t, 3)
	upd := got[1]
	if diff := cmp.Diff("update public.docs new=1|b|UNCHANGED|2024-05-01 10:00:00.5+00|0.1", summary(upd)); diff != "" {
		t.Fatalf("update (-want +got):\n%s", diff)
	}

	rr := newRowReader(t, pg, db)

	cur, found, err := rr.ReadRow(ctx, upd.Relation, []int{0}, nil, upd.New)
	if err != nil || !found {
		t.Fatalf("ReadRow = found %v, %v", found, err)
	}
	var body string
	if err := connect(t, pg, db).QueryRow(ctx, "SELECT body FROM docs WHERE id = 1").Scan(&body); err != nil {
		t.Fatal(err)
	}
	if len(body) != 1<<20 {
		t.Fatalf("body is %d bytes, want 1 MiB", len(body))
	}
	// Every column reads back exactly as the stream sent it, and the
	// unchanged one in full. (The body is compared apart: cmp walks a
	// []byte element by element.)
	if cur[2].Kind != cdc.Text || string(cur[2].Text) != body {
		t.Errorf("ReadRow body: kind %d, %d bytes, want the %d bytes in the table", cur[2].Kind, len(cur[2].Text), len(body))
	}
	want := append([]cdc.Value(nil), upd.New...)
	want[2], cur[2] = cdc.Value{}, cdc.Value{}
	if diff := cmp.Diff(want, cur); diff != "" {
		t.Errorf("ReadRow (-want +got):\n%s", diff)
	}

	// A second read reuses the statement; a missing row is not found.
	missing := []cdc.Value{{Kind: cdc.Text, Text: []byte("42")}}
	if _, found, err := rr.ReadRow(ctx, upd.Relation, []int{0}, nil, missing); err != nil || found {
		t.Errorf("ReadRow of a missing row = found %v, %v; want not found", found, err)
	}
	if _, _, err := rr.ReadRow(ctx, upd.Relation, []int{0}, nil, []cdc.Value{{Kind: cdc.Null}}); err == nil {
		t.Error("ReadRow with a NULL key succeeded")
	}
}

func TestSourceConfirmAndClose(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, pg, `CREATE TABLE t (id int PRIMARY KEY)`)
	start := setup(t, pg, db, public("t"))
	src := newSource(t, pg, db, 0)
	r := startRun(src)

	exec(t, pg, db, `INSERT INTO t VALUES (1)`)
	exec(t, pg, db, `INSERT INTO t VALUES (2)`)
	got := r.next(t, 6)
	first, second := got[2].Tx.EndLSN, got[5].Tx.EndLSN

	src.Confirm(first)
	src.Confirm(start) // lower: ignored
	if err := r.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v, want context.Canceled", err)
	}
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if lsn, err := slotLSN(ctx, pg, db, "bridge"); err != nil || lsn != first {
		t.Fatalf("confirmed_flush_lsn = %s, %v; want %s", lsn, err, first)
	}

	// A new Run resumes after the confirmed transaction.
	r = startRun(src)
	got = r.next(t, 3)
	if got[2].Tx.EndLSN != second || summary(got[1]) != "insert public.t new=2" {
		t.Errorf("resumed with %q ending at %s, want the second insert ending at %s", summaries(got), got[2].Tx.EndLSN, second)
	}
	src.Confirm(second)
	r.stop(t)
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if lsn, err := slotLSN(ctx, pg, db, "bridge"); err != nil || lsn != second {
		t.Fatalf("confirmed_flush_lsn = %s, %v; want %s", lsn, err, second)
	}
}

func TestSourceAdvancesWhenIdle(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, pg, `CREATE TABLE published (id int); CREATE TABLE busy (id int)`)
	start := setup(t, pg, db, public("published"))
	src := newSource(t, pg, db, 100*time.Millisecond)
	r := startRun(src)
	defer r.stop(t)

	i := 0
	err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		i++
		if err := pg.Exec(ctx, db, fmt.Sprintf("INSERT INTO busy VALUES (%d)", i)); err != nil {
			return false, "", err
		}
		lsn, err := slotLSN(ctx, pg, db, "bridge")
		if err != nil {
			return false, "", err
		}
		return lsn > start, fmt.Sprintf("confirmed_flush_lsn %s has not moved past %s", lsn, start), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-r.changes:
		t.Errorf("got %s for an unpublished table", summary(c))
	default:
	}

	// With a transaction emitted but not confirmed, keepalives do not move
	// the slot past it.
	exec(t, pg, db, "INSERT INTO published VALUES (1)")
	got := r.next(t, 3)
	held := src.Confirmed()
	if held >= got[2].Tx.EndLSN {
		t.Fatalf("confirmed %s already covers the unconfirmed transaction ending at %s", held, got[2].Tx.EndLSN)
	}
	for j := 0; j < 5; j++ {
		exec(t, pg, db, "INSERT INTO busy VALUES (0)")
	}
	// Watch for a while: the walsender sends keepalives as it decodes the
	// inserts above, and the slot must not move past the transaction.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); <-tick.C {
		if c := src.Confirmed(); c >= got[2].Tx.EndLSN {
			t.Fatalf("confirmed moved to %s past the unconfirmed transaction ending at %s", c, got[2].Tx.EndLSN)
		}
	}
}

func TestSourceResumesAfterServerRestart(t *testing.T) {
	ctx := context.Background()
	p := testenv.NewPostgres(t)
	db := newDB(t, p, `CREATE TABLE t (id int PRIMARY KEY)`)
	setup(t, p, db, public("t"))
	src := newSource(t, p, db, 200*time.Millisecond)
	r := startRun(src)

	exec(t, p, db, `INSERT INTO t VALUES (1)`)
	got := r.next(t, 3)
	src.Confirm(got[2].Tx.EndLSN)
	exec(t, p, db, `INSERT INTO t VALUES (2)`) // emitted, never confirmed
	r.next(t, 3)
	// Let a status update carry the confirmation before the restart.
	if err := testenv.Eventually(ctx, 10*time.Second, func(ctx context.Context) (bool, string, error) {
		lsn, err := slotLSN(ctx, p, db, "bridge")
		return lsn == got[2].Tx.EndLSN, fmt.Sprintf("slot at %s", lsn), err
	}); err != nil {
		t.Fatal(err)
	}

	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if !cdc.IsTransient(err) {
			t.Fatalf("Run after a server restart = %v, IsTransient false", err)
		}
		t.Logf("Run returned %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the server stopped")
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, p, db, `INSERT INTO t VALUES (3)`)

	// Run again, as the bridge does after a transient error, until both
	// inserts have come through.
	var ids []string
	for attempt := 1; len(ids) < 2; attempt++ {
		if attempt > 10 {
			t.Fatalf("no progress after %d attempts; got inserts %v", attempt-1, ids)
		}
		r = startRun(src)
		ids = append(ids, inserts(t, r, 2-len(ids))...)
	}
	// The unconfirmed insert comes again, then the new one; the confirmed
	// one does not.
	if diff := cmp.Diff([]string{"2", "3"}, ids); diff != "" {
		t.Errorf("inserts after the restart (-want +got):\n%s", diff)
	}

	// A crash: the connection drops without a word from the server.
	exec(t, p, db, `INSERT INTO t VALUES (4)`)
	if got := inserts(t, r, 1); len(got) != 1 || got[0] != "4" {
		t.Fatalf("inserts before the crash = %v, want [4]", got)
	}
	p.Kill()
	select {
	case err := <-r.done:
		if !cdc.IsTransient(err) {
			t.Fatalf("Run after a crash = %v, IsTransient false", err)
		}
		t.Logf("Run returned %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the server crashed")
	}
	// A killed backend can outlive the postmaster for a moment and hold
	// the shared memory the next start needs; start again until it is gone.
	if err := testenv.Eventually(ctx, 20*time.Second, func(ctx context.Context) (bool, string, error) {
		if err := p.Start(ctx); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	}); err != nil {
		t.Fatal(err)
	}
	ids = nil
	for attempt := 1; len(ids) < 1; attempt++ {
		if attempt > 10 {
			t.Fatalf("no progress after %d attempts", attempt-1)
		}
		r = startRun(src)
		ids = append(ids, inserts(t, r, 1)...)
	}
	r.stop(t)
	if ids[0] != "2" && ids[0] != "4" {
		t.Errorf("first insert after the crash = %s, want an unconfirmed one (2 or 4)", ids[0])
	}
}

func TestIsTransient(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := cdc.NewSource(cdc.SourceOptions{ConnString: pg.DSN("postgres"), Slot: "no_such_slot", Publication: "p"})
	err := src.Run(context.Background(), func(context.Context, cdc.Change) error { return nil })
	if err == nil || cdc.IsTransient(err) || !strings.Contains(err.Error(), `pg_create_logical_replication_slot('no_such_slot', 'pgoutput')`) {
		t.Errorf("Run on a missing slot = %v (transient %v), want a permanent error with the SQL to create it", err, cdc.IsTransient(err))
	}

	err = cdc.NewSource(cdc.SourceOptions{ConnString: pg.DSN("postgres"), Slot: "s", Publication: "p"}).Run(ctx, nil)
	if cdc.IsTransient(err) {
		t.Errorf("IsTransient(%v) = true for a cancelled context", err)
	}

	// Nothing listens on port 1.
	err = cdc.NewSource(cdc.SourceOptions{ConnString: "postgres://postgres@127.0.0.1:1/x?connect_timeout=5", Slot: "s", Publication: "p"}).
		Run(context.Background(), nil)
	if !cdc.IsTransient(err) {
		t.Errorf("IsTransient(%v) = false for a refused connection", err)
	}

	err = cdc.NewSource(cdc.SourceOptions{ConnString: pg.DSN("postgres"), Slot: "Bad-Name", Publication: "p", StatusInterval: time.Minute}).
		Run(context.Background(), nil)
	want := `cdc source options: Slot "Bad-Name" is not a valid slot name (1 to 63 lower-case letters, digits and underscores); StatusInterval 1m0s is outside 0 to 10s`
	if err == nil || err.Error() != want {
		t.Errorf("Run with bad options = %v, want %s", err, want)
	}
}

// inserts collects the first column of up to n inserts, returning early
// when Run fails with a transient error.
func inserts(t *testing.T, r *run, n int) []string {
	t.Helper()
	var ids []string
	timeout := time.After(30 * time.Second)
	for len(ids) < n {
		select {
		case c := <-r.changes:
			if c.Op == cdc.Insert {
				ids = append(ids, string(c.New[0].Text))
			}
		case err := <-r.done:
			if !cdc.IsTransient(err) {
				t.Fatalf("Run = %v, not transient", err)
			}
			r.done <- err // for stop
			return ids
		case <-timeout:
			t.Fatalf("timed out waiting for inserts; got %v", ids)
		}
	}
	return ids
}

// TestSourceSurvivesBlockedEmit blocks emit (as a Kafka outage does) for
// longer than wal_sender_timeout while the server has more to send: the
// status updates must keep the connection alive.
func TestSourceSurvivesBlockedEmit(t *testing.T) {
	db := newDB(t, pg, `CREATE TABLE t (id int PRIMARY KEY)`)
	setup(t, pg, db, public("t"))
	src := cdc.NewSource(cdc.SourceOptions{
		ConnString: pg.DSN(db) + "&options=-c%20wal_sender_timeout%3D3s", Slot: "bridge", Publication: "bridge",
		StatusInterval: 500 * time.Millisecond, Buffer: 4,
	})
	t.Cleanup(func() { src.Close(context.Background()) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	blocked := make(chan struct{})
	inserts := make(chan string, 1000)
	done := make(chan error, 1)
	go func() {
		first := true
		done <- src.Run(ctx, func(ctx context.Context, c cdc.Change) error {
			if first {
				first = false
				close(blocked)
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if c.Op == cdc.Insert {
				inserts <- string(c.New[0].Text)
			}
			return nil
		})
	}()

	for i := 1; i <= 50; i++ {
		exec(t, pg, db, fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	<-blocked
	// Twice wal_sender_timeout with emit blocked and the buffer full.
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while emit was blocked", err)
	case <-time.After(6 * time.Second):
	}
	close(release)
	// The connection must still be alive for a change made now.
	exec(t, pg, db, "INSERT INTO t VALUES (51)")
	for i := 1; i <= 51; i++ {
		select {
		case id := <-inserts:
			if id != strconv.Itoa(i) {
				t.Fatalf("insert %d has id %s", i, id)
			}
		case err := <-done:
			t.Fatalf("Run returned %v after %d inserts", err, i-1)
		case <-time.After(30 * time.Second):
			t.Fatalf("timed out after %d inserts", i-1)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v", err)
	}
}
