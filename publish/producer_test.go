package publish

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statefeed/statefeed/testenv"
)

func TestEnsureTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := testenv.NewBroker(t)

	// A topic someone created by hand with the default (delete) policy.
	adm := newAdmin(t, b)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, "legacy.deleting"); err != nil {
		t.Fatal(err)
	}

	p, err := NewProducer(Options{Brokers: b.Addrs(), Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	if err := p.EnsureTopics(ctx, []string{"crm.customer.v1", "sales.order.v1"}); err != nil {
		t.Fatalf("create: %v", err)
	}
	configs, err := adm.DescribeTopicConfigs(ctx, "crm.customer.v1", "sales.order.v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range configs {
		got := ""
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				got = *c.Value
			}
		}
		if got != "compact" {
			t.Errorf("topic %s: cleanup.policy = %q, want compact", rc.Name, got)
		}
	}
	details, err := adm.ListTopics(ctx, "crm.customer.v1")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(details["crm.customer.v1"].Partitions); n != 3 {
		t.Errorf("partitions = %d, want 3", n)
	}

	// Existing and compacted: accepted again.
	if err := p.EnsureTopics(ctx, []string{"crm.customer.v1"}); err != nil {
		t.Errorf("existing compacted topic: %v", err)
	}

	// Existing and not compacted: refused, saying how to fix it.
	err = p.EnsureTopics(ctx, []string{"crm.customer.v1", "legacy.deleting"})
	var te *TopicError
	if !errors.As(err, &te) {
		t.Fatalf("uncompacted topic: err = %v, want *TopicError", err)
	}
	for _, want := range []string{`topic "legacy.deleting"`, "cleanup.policy=delete", "allow_uncompacted_topics"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// With the explicit override it is used.
	p2, err := NewProducer(Options{Brokers: b.Addrs(), AllowUncompacted: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if err := p2.EnsureTopics(ctx, []string{"legacy.deleting"}); err != nil {
		t.Errorf("with AllowUncompacted: %v", err)
	}
}

func TestProduceAcknowledgesAndRefusesEmptyKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := testenv.NewBroker(t)
	p, err := NewProducer(Options{Brokers: b.Addrs(), Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.EnsureTopics(ctx, []string{"t"}); err != nil {
		t.Fatal(err)
	}

	acks := make(chan error, 3)
	for _, m := range []*Message{
		{Topic: "t", Key: []byte("k1"), Value: []byte(`{"v":1}`), ID: "1", Type: "e"},
		{Topic: "t", Key: []byte("k2"), Value: []byte(`{"v":2}`), ID: "2", Type: "e"},
		{Topic: "t", Key: []byte("k1"), Value: nil, ID: "3", Type: "e"},
	} {
		if err := p.Produce(ctx, m, func(err error) { acks <- err }); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Produce(ctx, &Message{Topic: "t", Value: []byte("{}")}, func(error) { t.Error("done called for a refused message") }); err == nil {
		t.Error("a message without a key was accepted")
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-acks; err != nil {
			t.Errorf("ack: %v", err)
		}
	}

	msgs, err := testenv.ReadTopic(ctx, b.Addrs(), "t")
	if err != nil {
		t.Fatal(err)
	}
	view := testenv.CompactedView(msgs)
	if len(view) != 1 || string(view["k2"]) != `{"v":2}` {
		t.Errorf("compacted view = %q, want only k2", view)
	}
	if n := testenv.NullKeys(msgs); n != 0 {
		t.Errorf("%d records with a null key", n)
	}
	var tomb *testenv.Message
	for i := range msgs {
		if msgs[i].Tombstone {
			tomb = &msgs[i]
		}
	}
	if tomb == nil || tomb.Headers["ce_type"] != "e" || tomb.Headers["ce_subject"] != "k1" {
		t.Errorf("tombstone = %+v, want one with CloudEvents headers", tomb)
	}
}

func newAdmin(t *testing.T, b *testenv.Broker) *kadm.Client {
	t.Helper()
	adm, err := kadm.NewOptClient(kadmSeeds(b.Addrs())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close)
	return adm
}

func kadmSeeds(addrs []string) []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(addrs...)} }

// TestScan reads a topic up to the end offsets it was given, in offset
// order per partition, and does not wait on a partition whose records
// were all deleted.
func TestScan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := testenv.NewBroker(t)
	p, err := NewProducer(Options{Brokers: b.Addrs(), Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.EnsureTopics(ctx, []string{"s"}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := p.Put(ctx, "s", fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := p.EndOffsets(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) != 2 || ends[0] == 0 || ends[1] == 0 || ends[0]+ends[1] != 20 {
		t.Fatalf("end offsets %v, want 20 records over both partitions", ends)
	}
	// Records after the ends given are not read.
	if err := p.Put(ctx, "s", []byte("late"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	scan := func() map[int32][]int64 {
		t.Helper()
		seen := map[int32][]int64{}
		err := p.Scan(ctx, "s", ends, func(part int32, off int64, key, value []byte) error {
			if string(key) == "late" {
				t.Error("read a record past the end offsets")
			}
			seen[part] = append(seen[part], off)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return seen
	}
	seen := scan()
	for part, offs := range seen {
		if int64(len(offs)) != ends[part] || !slices.IsSorted(offs) {
			t.Errorf("partition %d: offsets %v, want 0 to %d in order", part, offs, ends[part]-1)
		}
	}

	// Delete every record of partition 0, the late one too if it landed
	// there, and read partition 0 up to its new end.
	now, err := p.EndOffsets(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	adm := newAdmin(t, b)
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: "s", Partition: 0, At: now[0]})
	deleted, err := adm.DeleteRecords(ctx, offsets)
	if err == nil {
		err = deleted.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	ends[0] = now[0]
	seen = scan()
	if len(seen[0]) != 0 || int64(len(seen[1])) != ends[1] {
		t.Errorf("after deleting partition 0: read %d records of it and %d of partition 1, want 0 and %d", len(seen[0]), len(seen[1]), ends[1])
	}
}
