package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/publish"
	"github.com/statefeed/statefeed/testenv"
)

// snapshot measures the initial snapshot of a table of pre-existing rows
// and its two ceilings: reading the table (COPY ... TO STDOUT) and writing
// as many records of the same size to the same broker (a raw franz-go
// producer, configured like the bridge's). The slower of the two bounds a
// snapshot. The bridge creates its slot, takes the snapshot with its
// defaults, and is measured from the start of its stream to the moment
// Kafka acknowledged one record per row.
func (e *env) snapshot(ctx context.Context) (res result, err error) {
	t := newTable("snapshot", narrow)
	res = result{workload: t.name, rows: e.o.rows}
	conn, mappingFile, err := e.prepare(ctx, t)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// With -repeat, each side runs several times, alternating, and its
	// fastest run counts, as for the stream workloads.
	var slots, topics []string
	for i := range e.o.repeat {
		slots = append(slots, fmt.Sprintf("bench_bridge_snapshot_%d", i+1))
		topics = append(topics, progressTopic(slots[i]))
	}
	defer func() {
		err = errors.Join(err, e.cleanup(ctx, conn, t, slots...))
		for _, topic := range append(topics, rawTopic(t)) {
			if derr := e.deleteTopic(context.WithoutCancel(ctx), topic); derr != nil && !isUnknownTopic(derr) {
				err = errors.Join(err, derr)
			}
		}
	}()
	if err := t.insertRows(ctx, conn, 1, e.o.rows); err != nil {
		return res, err
	}
	// Pre-existing rows have been vacuumed: reading them sets no hint bits.
	if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) "+t.qualified()); err != nil {
		return res, fmt.Errorf("vacuum %s: %w", t.qualified(), err)
	}
	recs, err := e.project(ctx, mappingFile)
	if err != nil {
		return res, err
	}
	if len(recs) != e.o.rows {
		return res, fmt.Errorf("the mapping projects %d of the %d rows", len(recs), e.o.rows)
	}

	var copyRate, produceRate float64
	peak := int64(0)
	for i, slot := range slots {
		start := time.Now()
		if _, err := conn.PgConn().CopyTo(ctx, io.Discard, "COPY "+t.qualified()+" TO STDOUT"); err != nil {
			return res, fmt.Errorf("copy %s to stdout: %w", t.qualified(), err)
		}
		copyRate = max(copyRate, float64(e.o.rows)/time.Since(start).Seconds())

		if i > 0 {
			// A new slot with data in the topic is a lost slot to the
			// bridge: each run starts from an empty topic.
			if err := e.deleteTopic(ctx, t.topic()); err != nil {
				return res, err
			}
		}
		b, err := e.startBridge(ctx, t.name, t.publication(), slot, mappingFile, true)
		if err != nil {
			return res, err
		}
		acked, waitErr := b.waitPublished(ctx, int64(e.o.rows))
		u, stopErr := b.stop()
		if err := errors.Join(waitErr, stopErr); err != nil {
			return res, err
		}
		if err := e.checkTopic(ctx, t.topic(), int64(e.o.rows)); err != nil {
			return res, err
		}
		rate := float64(e.o.rows) / acked.Sub(b.streaming).Seconds()
		if rate > res.rate {
			res.setBridge(e.o.rows, acked.Sub(b.streaming), u)
		}
		peak = max(peak, u.peakRSS)

		took, err := e.rawProduce(ctx, t, recs, i == 0)
		if err != nil {
			return res, err
		}
		produceRate = max(produceRate, float64(len(recs))/took.Seconds())
		e.say("  run %d of %d: bridge %s rows/s, COPY %s rows/s, raw producer %s rows/s", i+1, e.o.repeat,
			thousands(rate), thousands(copyRate), thousands(float64(len(recs))/took.Seconds()))
	}
	res.peakRSS = peak

	res.ceilingRate = min(copyRate, produceRate)
	res.ceiling = fmt.Sprintf("slower of COPY TO STDOUT (%s rows/s) and a raw producer (%s rows/s)", thousands(copyRate), thousands(produceRate))
	return res, nil
}

// rawTopic is where the raw producer writes: the bridge has written the
// table's topic already.
func rawTopic(t table) string { return t.topic() + ".raw" }

// progressTopic is the bridge's backfill progress topic for slot, as its
// configuration defaults it (source.name is the database's name).
func progressTopic(slot string) string { return "statefeed.backfills." + database + "." + slot }

// keyValue is one record's key and value.
type keyValue struct{ key, value []byte }

// project applies the mapping to every row of its table, as the bridge
// would publish them.
func (e *env) project(ctx context.Context, mappingFile string) ([]keyValue, error) {
	set, err := mapping.Load([]string{mappingFile})
	if err != nil {
		return nil, err
	}
	conn, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	cat, err := cdc.LoadCatalog(ctx, conn, set.Tables())
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	if err := set.Check(cat); err != nil {
		return nil, err
	}
	view, err := testenv.ExpectedView(ctx, e.dsn, set.Mappings[0])
	if err != nil {
		return nil, err
	}
	recs := make([]keyValue, 0, len(view))
	for k, v := range view {
		recs = append(recs, keyValue{[]byte(k), v})
	}
	return recs, nil
}

// rawProduce writes recs to t's topic with a franz-go client configured as
// package publish configures the bridge's (acks from all in-sync replicas,
// idempotent, 5ms linger, 10,000 buffered records, its LZ4), with headers of
// the size the bridge writes, and returns the time from the first produce
// to the last acknowledgement.
func (e *env) rawProduce(ctx context.Context, t table, recs []keyValue, create bool) (time.Duration, error) {
	if create {
		compact, maxBytes := "compact", strconv.Itoa(8<<20)
		created, err := e.adm.CreateTopic(ctx, int32(e.o.partitions), -1,
			map[string]*string{"cleanup.policy": &compact, "max.message.bytes": &maxBytes}, rawTopic(t))
		if err == nil {
			err = created.Err
		}
		if err != nil {
			return 0, fmt.Errorf("create topic %s: %w", rawTopic(t), err)
		}
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.broker.Addrs()...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(10000),
		kgo.MaxBufferedBytes(64<<20),
		kgo.ProducerBatchMaxBytes(8<<20),
		kgo.WithCompressor(publish.NewCompressor()),
	)
	if err != nil {
		return 0, fmt.Errorf("kafka producer: %w", err)
	}
	defer cl.Close()
	headers := snapshotHeaders(t)

	var (
		once     sync.Once
		firstErr error
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			once.Do(func() { firstErr = err })
		}
	}
	start := time.Now()
	for _, r := range recs {
		cl.Produce(ctx, &kgo.Record{Topic: rawTopic(t), Key: r.key, Value: r.value, Headers: headers}, done)
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("flush the producer: %w", err)
	}
	took := time.Since(start)
	if firstErr != nil {
		return 0, fmt.Errorf("produce to %s: %w", rawTopic(t), firstErr)
	}
	return took, nil
}

// snapshotHeaders are CloudEvents headers of the size the bridge writes
// for a row of t.
func snapshotHeaders(t table) []kgo.RecordHeader {
	h := func(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
	return []kgo.RecordHeader{
		h(publish.HeaderSpecVersion, publish.SpecVersion),
		h(publish.HeaderID, "0/1A2B3C4D/123456/0"),
		h(publish.HeaderSource, "postgresql://"+database+"/"+t.qualified()),
		h(publish.HeaderType, "item"),
		h(publish.HeaderSubject, "123456"),
		h(publish.HeaderTime, "2024-01-01T00:00:00.123456Z"),
		h(publish.HeaderContentType, publish.ContentType),
		h(publish.HeaderLSN, "0/1A2B3C4D"),
		h(publish.HeaderXID, "123456"),
		h(publish.HeaderTable, t.qualified()),
		h(publish.HeaderOp, "insert"),
	}
}
