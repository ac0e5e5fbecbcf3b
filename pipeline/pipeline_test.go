package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/publish"
)

// testTable is a one-table catalog these tests project.
var testTable = &cdc.Table{
	Name: cdc.TableName{Schema: "public", Name: "t"},
	Columns: []cdc.TableColumn{
		{Name: "id", TypeOID: pgtype.Int4OID, Type: "integer", NotNull: true},
		{Name: "name", TypeOID: pgtype.TextOID, Type: "text"},
	},
	PrimaryKey:      []string{"id"},
	ReplicaIdentity: 'd',
	IdentityColumns: []string{"id"},
	UniqueKeys:      [][]string{{"id"}},
}

func testProjector(t *testing.T) *mapping.Projector {
	t.Helper()
	_, set := checkedSet(t, "entity: thing\ntopic: test.thing.v1\ntable: public.t\nfields:\n  id: id\n  name: name\n", testTable)
	return mapping.NewProjector(set)
}

// checkedSet writes one mapping file, loads it and checks it against a
// catalog holding tbl.
func checkedSet(t *testing.T, yaml string, tbl *cdc.Table) (file string, set *mapping.Set) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "mapping.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := mapping.Load([]string{file})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Check(cdc.Catalog{tbl.Name: tbl}); err != nil {
		t.Fatal(err)
	}
	return file, set
}

// runUntilEmitted runs p until src has emitted its changes, then stops it
// and returns what Run returned.
func runUntilEmitted(t *testing.T, p *Pipeline, src *scriptSource) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-src.emitted
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10s after the stop")
		return nil
	}
}

// scriptSource emits one transaction of one insert per Run, then waits for
// ctx like a quiet replication stream.
type scriptSource struct {
	mu        sync.Mutex
	confirmed pglogrepl.LSN
	emitted   chan struct{}
	changes   []cdc.Change // default: oneInsert(0x100, "1")
}

func (s *scriptSource) Run(ctx context.Context, emit func(context.Context, cdc.Change) error) error {
	changes := s.changes
	if changes == nil {
		changes = oneInsert(0x100, "1")
	}
	for _, c := range changes {
		if err := emit(ctx, c); err != nil {
			return err
		}
	}
	close(s.emitted)
	<-ctx.Done()
	return ctx.Err()
}

var testRel = &cdc.Relation{ID: 1, Table: testTable.Name, ReplicaIdentity: 'd', Columns: []cdc.Column{
	{Name: "id", TypeOID: pgtype.Int4OID, TypeMod: -1, Identity: true},
	{Name: "name", TypeOID: pgtype.TextOID, TypeMod: -1},
}}

// oneInsert is a transaction of one insert of row (id, "a") committed at commit.
func oneInsert(commit pglogrepl.LSN, id string) []cdc.Change {
	tx := &cdc.Tx{XID: uint32(commit), CommitLSN: commit, EndLSN: commit + 8, CommitTime: time.Now()}
	return []cdc.Change{
		{Op: cdc.Begin, Tx: tx},
		{Op: cdc.Insert, Tx: tx, Relation: testRel, New: []cdc.Value{{Kind: cdc.Text, Text: []byte(id)}, {Kind: cdc.Text, Text: []byte("a")}}},
		{Op: cdc.Commit, Tx: tx},
	}
}

func (s *scriptSource) Confirm(lsn pglogrepl.LSN) {
	s.mu.Lock()
	s.confirmed = max(s.confirmed, lsn)
	s.mu.Unlock()
}

func (s *scriptSource) Close(context.Context) error { return nil }

// TestStopWhileKafkaDownReportsIt stops a pipeline whose only record Kafka
// never acknowledges (the broker address does not answer). The stop must
// report what was not acknowledged (exit status 1, configuration.md), even
// though franz-go fails the cancelled records with context.Canceled on its
// own goroutines while the stop is decided: repeated to catch the race.
func TestStopWhileKafkaDownReportsIt(t *testing.T) {
	for i := range 10 {
		prod, err := publish.NewProducer(publish.Options{Brokers: []string{"127.0.0.1:1"}})
		if err != nil {
			t.Fatal(err)
		}
		src := &scriptSource{emitted: make(chan struct{})}
		p := New(Options{
			Source:          src,
			Projector:       testProjector(t),
			Producer:        prod,
			ShutdownTimeout: 100 * time.Millisecond,
		})
		runErr := runUntilEmitted(t, p, src)
		prod.Close()
		if src.confirmed != 0 {
			t.Errorf("run %d: confirmed %s although Kafka acknowledged nothing", i, src.confirmed)
		}
		if runErr == nil || !strings.Contains(runErr.Error(), "did not acknowledge") {
			t.Errorf("run %d: Run after a stop with an unacknowledged record = %v; want the documented \"did not acknowledge\" error (exit 1)", i, runErr)
		}
		if errors.Is(runErr, context.Canceled) {
			t.Errorf("run %d: error wraps context.Canceled", i)
		}
	}
}

// reverseProducer holds every record until Flush, then acknowledges them
// last first, as acknowledgements from different partitions may arrive.
type reverseProducer struct {
	mu   sync.Mutex
	done []func(error)
}

func (p *reverseProducer) Produce(_ context.Context, _ *publish.Message, done func(error)) error {
	p.mu.Lock()
	p.done = append(p.done, done)
	p.mu.Unlock()
	return nil
}

func (p *reverseProducer) Flush(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.done) - 1; i >= 0; i-- {
		p.done[i](nil)
	}
	p.done = nil
	return nil
}

// TestProgressCountsTransactions confirms two transactions whose records
// are acknowledged last first: the second ack settles both at once, and
// the progress counter must count two transactions, not one confirmation.
func TestProgressCountsTransactions(t *testing.T) {
	src := &scriptSource{emitted: make(chan struct{}), changes: append(oneInsert(0x100, "1"), oneInsert(0x200, "2")...)}
	prod := &reverseProducer{}
	p := New(Options{Source: src, Projector: testProjector(t), Producer: prod})
	if err := runUntilEmitted(t, p, src); err != nil {
		t.Fatal(err)
	}
	if src.confirmed != 0x208 {
		t.Fatalf("confirmed %s, want 0/208", src.confirmed)
	}
	if got := p.confirmed.Load(); got != 2 {
		t.Errorf("progress counts %d confirmed transactions, want 2", got)
	}
}

// TestEmptyKeyErrorSaysWhichRowAndWhatToDo projects a row whose text key
// is the empty string, which Kafka cannot key a compacted record by. The
// error must name the mapping file and the row's primary key and say what
// to do, like every row error.
func TestEmptyKeyErrorSaysWhichRowAndWhatToDo(t *testing.T) {
	tbl := *testTable
	tbl.ReplicaIdentity = 'f'
	tbl.IdentityColumns = []string{"id", "name"}
	tbl.Columns = []cdc.TableColumn{tbl.Columns[0], {Name: "name", TypeOID: pgtype.TextOID, Type: "text", NotNull: true}}
	tbl.UniqueKeys = [][]string{{"id"}, {"name"}}
	f, set := checkedSet(t, "entity: thing\ntopic: test.thing.v1\ntable: public.t\nkey: [name]\nfields:\n  id: id\n  name: name\n", &tbl)
	changes := oneInsert(0x100, "7")
	changes[1].New[1] = cdc.Value{Kind: cdc.Text, Text: []byte("")}
	src := &scriptSource{emitted: make(chan struct{}), changes: changes}
	prod, err := publish.NewProducer(publish.Options{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	runErr := New(Options{Source: src, Projector: mapping.NewProjector(set), Producer: prod}).Run(context.Background())
	t.Logf("error: %v", runErr)
	if runErr == nil {
		t.Fatal("Run accepted an empty key")
	}
	for _, want := range []string{f, "(id)=(7)", "filter"} {
		if !strings.Contains(runErr.Error(), want) {
			t.Errorf("the error does not mention %q", want)
		}
	}
}

// capturingProducer acknowledges every record at once and keeps it.
type capturingProducer struct {
	mu   sync.Mutex
	msgs []publish.Message
}

func (p *capturingProducer) Produce(_ context.Context, m *publish.Message, done func(error)) error {
	p.mu.Lock()
	p.msgs = append(p.msgs, *m)
	p.mu.Unlock()
	done(nil)
	return nil
}

func (p *capturingProducer) Flush(context.Context) error { return nil }

// TestMessageAttributes checks what the pipeline puts in the CloudEvents
// attributes: ce_id from the commit LSN, the change's ordinal and the
// record's ordinal; ce_source and ce_table from the table.
func TestMessageAttributes(t *testing.T) {
	changes := append(oneInsert(0x16B3748, "1"), oneInsert(0x16B3800, "2")...)
	src := &scriptSource{emitted: make(chan struct{}), changes: changes}
	prod := &capturingProducer{}
	p := New(Options{Source: src, Projector: testProjector(t), Producer: prod, SourceName: "legacy"})
	if err := runUntilEmitted(t, p, src); err != nil {
		t.Fatal(err)
	}
	type attrs struct{ ID, Source, Table, Op, Type, Key string }
	var got []attrs
	for _, m := range prod.msgs {
		got = append(got, attrs{m.ID, m.Source, m.Table, m.Op, m.Type, string(m.Key)})
	}
	want := []attrs{
		{"0/16B3748/0/0", "postgresql://legacy/public.t", "public.t", "insert", "thing", "1"},
		{"0/16B3800/0/0", "postgresql://legacy/public.t", "public.t", "insert", "thing", "2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
}
