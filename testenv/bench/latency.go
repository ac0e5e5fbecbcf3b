package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statefeed/statefeed/publish"
)

// latency holds an offered load of rate rows/s for -latency-for with the
// bridge streaming, and measures, for every row, the time from its commit
// to the moment a consumer of the topic received its record.
//
// The commit time is the ce_time header, which the bridge copies from the
// transaction's commit timestamp on the server; the consumer runs on the
// same machine, so both clocks are the same. A record reaches a consumer
// only after the broker appended it, which is when it acknowledges it, so
// the receipt time is an upper bound of the acknowledgement time, by one
// fetch response over loopback.
//
// The writer commits with synchronous_commit=on, as a production database
// does: walsenders send only flushed WAL, and an asynchronous commit waits
// up to wal_writer_delay for the flush.
func (e *env) latency(ctx context.Context, rate int) (res result, err error) {
	t := newTable(fmt.Sprintf("latency-%d", rate), narrow)
	res = result{workload: t.name, ceiling: "offered load", ceilingRate: float64(rate)}
	conn, mappingFile, err := e.prepare(ctx, t)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	defer func() { err = errors.Join(err, e.cleanup(ctx, conn, t, bridgeSlot(1))) }()
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", bridgeSlot(1)); err != nil {
		return res, fmt.Errorf("create slot %s: %w", bridgeSlot(1), err)
	}
	b, err := e.startBridge(ctx, t.name, t.publication(), bridgeSlot(1), mappingFile, false)
	if err != nil {
		return res, err
	}
	// The bridge created the topic before it started streaming.
	c, err := startConsumer(ctx, e.broker.Addrs(), t.topic())
	if err != nil {
		b.stop()
		return res, err
	}
	rows, writeErr := writeAtRate(ctx, conn, t, rate, e.o.latencyFor)
	var lat []time.Duration
	var span time.Duration
	if writeErr == nil {
		lat, span, writeErr = c.wait(ctx, rows)
	}
	c.close()
	u, stopErr := b.stop()
	if err := errors.Join(writeErr, stopErr); err != nil {
		return res, err
	}
	res.rows = rows
	res.setBridge(rows, span, u)
	slices.Sort(lat)
	for _, p := range []float64{0.50, 0.95, 0.99} {
		res.latency = append(res.latency, lat[int(p*float64(len(lat)-1)+0.5)])
	}
	return res, e.checkTopic(ctx, t.topic(), int64(rows))
}

// writeAtRate inserts rows at rate rows/s for d, a transaction every 10ms
// with the rows due by then, and returns how many it inserted.
func writeAtRate(ctx context.Context, conn *pgx.Conn, t table, rate int, d time.Duration) (int, error) {
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return 0, fmt.Errorf("set synchronous_commit: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "RESET synchronous_commit")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	written := 0
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return written, ctx.Err()
		case <-tick.C:
		}
		elapsed := min(time.Since(start), d)
		due := int(float64(rate) * elapsed.Seconds())
		if due > written {
			if err := t.insertRows(ctx, conn, written+1, due); err != nil {
				return written, err
			}
			written = due
		}
		if elapsed == d {
			return written, nil
		}
	}
}

// consumer reads a topic from its start and notes, for every record, the
// time from the commit its ce_time header names to its receipt.
type consumer struct {
	cl   *kgo.Client
	done chan struct{}

	mu          sync.Mutex
	lat         []time.Duration
	first, last time.Time // earliest commit, latest receipt
	err         error
}

func startConsumer(ctx context.Context, brokers []string, topic string) (*consumer, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	c := &consumer{cl: cl, done: make(chan struct{})}
	go c.run(ctx)
	return c, nil
}

func (c *consumer) run(ctx context.Context) {
	defer close(c.done)
	for {
		fetches := c.cl.PollFetches(ctx)
		received := time.Now()
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		for _, fe := range fetches.Errors() {
			c.err = fmt.Errorf("consume partition %d: %w", fe.Partition, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key != publish.HeaderTime {
					continue
				}
				commit, err := time.Parse(time.RFC3339Nano, string(h.Value))
				if err != nil {
					c.err = fmt.Errorf("record at offset %d: ce_time %q: %w", r.Offset, h.Value, err)
					return
				}
				c.lat = append(c.lat, received.Sub(commit))
				if c.first.IsZero() || commit.Before(c.first) {
					c.first = commit
				}
				c.last = received
			}
		})
		c.mu.Unlock()
	}
}

// wait waits until the consumer has received n records and returns their
// latencies and the time from the first commit to the last receipt.
func (c *consumer) wait(ctx context.Context, n int) ([]time.Duration, time.Duration, error) {
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		got, err := len(c.lat), c.err
		if got >= n || err != nil {
			lat, span := slices.Clone(c.lat), c.last.Sub(c.first)
			c.mu.Unlock()
			return lat, span, err
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("the consumer received %d of %d records within a minute of the last commit", got, n)
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-tick.C:
		}
	}
}

func (c *consumer) close() {
	c.cl.Close()
	<-c.done
}
