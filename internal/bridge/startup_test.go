package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statefeed/statefeed/testenv"
)

// TestTopicErrorCreatesNoSlot starts the bridge against an existing topic
// that is not compacted. Start-up refuses it (exit 2, as documented) and
// must not have created the replication slot: a first start that fails on
// Kafka would otherwise leave a slot behind that pins WAL.
func TestTopicErrorCreatesNoSlot(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, nil, e.topic("customer")); err != nil {
		t.Fatal(err)
	}

	err = Run(ctx, e.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), RunOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Run with an uncompacted topic = %v, want a ConfigError", err)
	}
	slots := e.queryString(`SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '` + e.db + `'`)
	if slots != "0" {
		t.Errorf("start-up failed on the topics (%v) but left replication slot %q behind, pinning WAL", err, e.db)
	}
}

// TestStopWhileWaitingForKafka stops the bridge while it waits at start-up
// for an unreachable Kafka. The docs promise exit 0 for a stop by SIGINT or
// SIGTERM, so Run must return nil rather than context.Canceled (which
// cmd/bridge would print and turn into exit status 1), and no slot may be
// left behind.
func TestStopWhileWaitingForKafka(t *testing.T) {
	e := newEnv(t)
	e.cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, slog.New(slog.NewTextHandler(logs, nil)), RunOptions{}) }()
	if err := testenv.Eventually(context.Background(), 30*time.Second, func(context.Context) (bool, string, error) {
		return strings.Contains(logs.String(), "kafka not reachable"), "the bridge does not wait for Kafka yet", nil
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run stopped while waiting for Kafka = %v; want nil (a clean stop, exit 0)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the stop")
	}
	if n := e.queryString(`SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '` + e.db + `'`); n != "0" {
		t.Errorf("a start-up that never reached Kafka left replication slot %q behind", e.db)
	}
}
