package publish

import (
	"context"
	"errors"
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
