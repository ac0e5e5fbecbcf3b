package cdc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/statefeed/statefeed/cdc"
)

// TestSourceRunAgainAfterStopMidTransaction ends a Run in the middle of a
// transaction (emit fails after its Begin, as a lost connection or a failed
// produce does) and runs again: the next Run must stream the transaction
// again from its Begin, not fail because the decoder still holds the
// abandoned transaction open.
func TestSourceRunAgainAfterStopMidTransaction(t *testing.T) {
	db := newDB(t, pg, `CREATE TABLE t (id int PRIMARY KEY)`)
	setup(t, pg, db, public("t"))
	src := cdc.NewSource(cdc.SourceOptions{
		ConnString: pg.DSN(db), Slot: "bridge", Publication: "bridge", Buffer: 1,
	})
	t.Cleanup(func() { src.Close(context.Background()) })
	exec(t, pg, db, `INSERT INTO t SELECT generate_series(1, 200)`)

	errStop := errors.New("stop mid-transaction")
	err := src.Run(context.Background(), func(ctx context.Context, c cdc.Change) error {
		if c.Op == cdc.Insert {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("first Run = %v, want %v", err, errStop)
	}

	r := startRun(src)
	got := r.next(t, 202)
	r.stop(t)
	if got[0].Op != cdc.Begin || got[201].Op != cdc.Commit {
		t.Fatalf("second Run streamed %s ... %s, want begin ... commit", got[0].Op, got[201].Op)
	}
	for i, c := range got[1:201] {
		if c.Op != cdc.Insert || c.Seq != i {
			t.Fatalf("change %d of the replayed transaction = %s seq %d, want insert seq %d", i, c.Op, c.Seq, i)
		}
	}
}
