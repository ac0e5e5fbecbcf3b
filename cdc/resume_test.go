package cdc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

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

// TestRowReaderReadsOnlyTheColumnsAsked reads a row back with a relation
// announced before a column was dropped: naming only the columns it needs,
// the read does not touch the dropped one.
func TestRowReaderReadsOnlyTheColumnsAsked(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, pg, `CREATE TABLE docs (id int PRIMARY KEY, junk int, title text)`)
	setup(t, pg, db, public("docs"))
	src := newSource(t, pg, db, 0)
	r := startRun(src)
	defer r.stop(t)
	exec(t, pg, db, `INSERT INTO docs VALUES (1, 7, 'a')`)
	ins := r.next(t, 3)[1]
	exec(t, pg, db, `ALTER TABLE docs DROP COLUMN junk`)

	rr := newRowReader(t, pg, db)

	cur, found, err := rr.ReadRow(ctx, ins.Relation, []int{0}, []int{0, 2}, ins.New)
	if err != nil || !found {
		t.Fatalf("ReadRow of id, title = found %v, %v", found, err)
	}
	want := []cdc.Value{{Kind: cdc.Text, Text: []byte("1")}, {}, {Kind: cdc.Text, Text: []byte("a")}}
	if diff := cmp.Diff(want, cur); diff != "" {
		t.Errorf("ReadRow (-want +got):\n%s", diff)
	}
	if _, _, err := rr.ReadRow(ctx, ins.Relation, []int{0}, nil, ins.New); err == nil {
		t.Error("ReadRow of every column, the dropped one too, succeeded")
	}
}
