package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestBrokerCompactedTopic(t *testing.T) {
	b := NewBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := newClient(t, b)
	createCompacted(ctx, t, cl, "crm.customer.v1", 3)

	produce(ctx, t, cl, "crm.customer.v1",
		rec("1", `{"id":1,"name":"Ada"}`),
		rec("2", `{"id":2,"name":"Bob"}`),
		rec("1", `{"id":1,"name":"Ada L."}`),
		rec("2", ""), // tombstone
		rec("3", `{"id":3,"name":"Cy"}`),
	)
	want := map[string][]byte{
		"1": []byte(`{"id":1,"name":"Ada L."}`),
		"3": []byte(`{"id":3,"name":"Cy"}`),
	}

	msgs, err := ReadTopic(ctx, b.Addrs(), "crm.customer.v1")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 5 {
		t.Errorf("read %d messages, want 5: %v", len(msgs), msgs)
	}
	checkOrdered(t, msgs)
	tombstones := 0
	for _, m := range msgs {
		if m.Tombstone {
			tombstones++
			if string(m.Key) != "2" || m.Value != nil {
				t.Errorf("tombstone %+v, want key 2 and a nil value", m)
			}
		}
		if m.Headers["ce_type"] != "customer" {
			t.Errorf("message %d/%d: headers %v, want ce_type=customer", m.Partition, m.Offset, m.Headers)
		}
	}
	if tombstones != 1 {
		t.Errorf("%d tombstones, want 1", tombstones)
	}
	if n := NullKeys(msgs); n != 0 {
		t.Errorf("%d null keys", n)
	}
	if d := DiffViews(CompactedView(msgs), want); d != "" {
		t.Error(d)
	}

	// Forced compaction changes the log, never the view.
	b.Compact()
	msgs, err = ReadTopic(ctx, b.Addrs(), "crm.customer.v1")
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffViews(CompactedView(msgs), want); d != "" {
		t.Errorf("after Compact: %s", d)
	}
}

func TestBrokerNoAutoCreate(t *testing.T) {
	b := NewBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if err := cl.ProduceSync(short, &kgo.Record{Topic: "nope", Key: []byte("k")}).FirstErr(); err == nil {
		t.Error("produced to a topic nobody created")
	}
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has("nope") {
		t.Error("the broker created topic nope on its own")
	}
	if _, err := ReadTopic(ctx, b.Addrs(), "nope"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("ReadTopic of a missing topic: %v, want a does-not-exist error", err)
	}
}

func TestBrokerEmptyTopic(t *testing.T) {
	b := NewBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	createCompacted(ctx, t, newClient(t, b), "empty", 2)
	msgs, err := ReadTopic(ctx, b.Addrs(), "empty")
	if err != nil || len(msgs) != 0 {
		t.Errorf("ReadTopic(empty) = %v, %v; want nothing", msgs, err)
	}
}

func TestBrokerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := StartBroker(ctx, BrokerOptions{CompactEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	addrs := b.Addrs()
	cl := newClient(t, b)
	createCompacted(ctx, t, cl, "t", 1)
	produce(ctx, t, cl, "t", rec("k", "v1"), rec("k", "v2"), rec("j", "v1"))

	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(addrs, b.Addrs()); diff != "" {
		t.Errorf("addresses changed across Restart (-before +after):\n%s", diff)
	}
	msgs, err := ReadTopic(ctx, b.Addrs(), "t")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"k": []byte("v2"), "j": []byte("v1")}
	if d := DiffViews(CompactedView(msgs), want); d != "" {
		t.Errorf("after Restart: %s", d)
	}

	// The client from before the restart reconnects by itself, and the
	// compaction timer runs again without Compact being called: "m" ends
	// up with a single record (the last batch, "z", is never compacted).
	produce(ctx, t, cl, "t", rec("m", "1"), rec("m", "2"), rec("m", "3"), rec("z", "1"))
	want["m"], want["z"] = []byte("3"), []byte("1")
	err = Eventually(ctx, 10*time.Second, func(ctx context.Context) (bool, string, error) {
		msgs, err := ReadTopic(ctx, b.Addrs(), "t")
		if err != nil {
			return false, "", err
		}
		if d := DiffViews(CompactedView(msgs), want); d != "" {
			return false, "", errors.New(d)
		}
		var ms []string
		for _, m := range msgs {
			if string(m.Key) == "m" {
				ms = append(ms, string(m.Value))
			}
		}
		if len(ms) != 1 {
			return false, fmt.Sprintf("key m has records %q, want only the last", ms), nil
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBrokerRestartInMemory(t *testing.T) {
	ctx := context.Background()
	b, err := StartBroker(ctx, BrokerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Restart(ctx); err == nil {
		t.Error("Restart of an InMemory broker succeeded")
	}
}

func TestBrokerOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		opts BrokerOptions
		want string
	}{
		{BrokerOptions{Brokers: -1}, "BrokerOptions.Brokers is -1"},
		{BrokerOptions{CompactEvery: time.Microsecond}, "at least 1ms"},
		{BrokerOptions{InMemory: true, DataDir: "x"}, "InMemory and DataDir both set"},
	} {
		_, err := StartBroker(context.Background(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("StartBroker(%+v) = %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
}

func newClient(t *testing.T, b *Broker) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(b.Addrs()...),
		// After a dropped connection the client refreshes its metadata,
		// at most every 5s by default; do not let that pace the tests.
		kgo.MetadataMinAge(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createCompacted(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, partitions int32) {
	t.Helper()
	policy := "compact"
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, map[string]*string{"cleanup.policy": &policy}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// rec returns a record for key with value, or a tombstone if value is "".
func rec(key, value string) *kgo.Record {
	r := &kgo.Record{
		Key:     []byte(key),
		Headers: []kgo.RecordHeader{{Key: "ce_type", Value: []byte("customer")}},
	}
	if value != "" {
		r.Value = []byte(value)
	}
	return r
}

// produce writes each record in a batch of its own, so compaction, which
// spares only the last batch, can act on all the others.
func produce(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, rs ...*kgo.Record) {
	t.Helper()
	for _, r := range rs {
		r.Topic = topic
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %s to %s: %v", r.Key, topic, err)
		}
	}
}

func checkOrdered(t *testing.T, msgs []Message) {
	t.Helper()
	for i := 1; i < len(msgs); i++ {
		a, b := msgs[i-1], msgs[i]
		if a.Partition > b.Partition || a.Partition == b.Partition && a.Offset >= b.Offset {
			t.Errorf("messages out of order: %d/%d before %d/%d", a.Partition, a.Offset, b.Partition, b.Offset)
		}
	}
}
