package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Options configures a Producer. Zero values take the documented defaults.
type Options struct {
	Brokers  []string // seed brokers, host:port; required
	ClientID string   // default "statefeed-bridge"

	// Partitions and ReplicationFactor apply to topics the producer creates.
	// Defaults: 1 partition; the broker's default replication factor (-1).
	Partitions        int32
	ReplicationFactor int16

	// AllowUncompacted lets the bridge write to an existing topic whose
	// cleanup.policy is not exactly "compact", logging a warning instead of
	// refusing. Consumers of such a topic lose the current state of keys
	// that retention deletes.
	AllowUncompacted bool

	// Linger is how long a partition batch waits for more records
	// (default 5ms). MaxBufferedRecords bounds the records waiting for an
	// acknowledgement (default 10000), and their bytes are bounded to 64 MiB
	// (or four maximal messages); Produce blocks when either is reached,
	// which is how Kafka back-pressure reaches the WAL reader.
	Linger             time.Duration
	MaxBufferedRecords int

	// MaxMessageBytes is the largest record batch the producer sends and
	// the max.message.bytes of the topics it creates (default 8 MiB). An
	// entity's document must fit: a 1 MB TOASTed text column makes a 1 MB
	// value.
	MaxMessageBytes int32

	Logger *slog.Logger
}

// Producer publishes Messages to Kafka. It is safe for concurrent use.
// The caller closes it with Close after Flush.
type Producer struct {
	o    Options
	cl   *kgo.Client
	adm  *kadm.Client
	log  *slog.Logger
	free sync.Pool // of *inflight, recycled after their acknowledgement
}

// NewProducer validates o and creates the Kafka client. It does not contact
// the brokers; EnsureTopics is the first call that does.
func NewProducer(o Options) (*Producer, error) {
	if len(o.Brokers) == 0 {
		return nil, errors.New("kafka.brokers: at least one seed broker is required")
	}
	if o.ClientID == "" {
		o.ClientID = "statefeed-bridge"
	}
	if o.Partitions == 0 {
		o.Partitions = 1
	}
	if o.Partitions < 0 {
		return nil, fmt.Errorf("kafka.topic_defaults.partitions: %d is not a partition count; use 1 or more", o.Partitions)
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = -1
	}
	if o.Linger == 0 {
		o.Linger = 5 * time.Millisecond
	}
	if o.MaxBufferedRecords == 0 {
		o.MaxBufferedRecords = 10000
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = 8 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.Brokers...),
		kgo.ClientID(o.ClientID),
		// The no-loss guarantee rests on acks from every in-sync replica
		// (spelled out here though it is franz-go's default) and on the
		// idempotent producer, which franz-go enables unless told not to
		// (DisableIdempotentWrite is never used): retries neither duplicate
		// nor reorder records within a partition.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(o.Linger),
		kgo.MaxBufferedRecords(o.MaxBufferedRecords),
		// Bound memory by bytes too: a few thousand large documents would
		// otherwise fit under the record count.
		kgo.MaxBufferedBytes(max(64<<20, 4*int(o.MaxMessageBytes))),
		kgo.ProducerBatchMaxBytes(o.MaxMessageBytes),
		// Records are retried without limit (franz-go's default, kept): an
		// unreachable broker delays acknowledgements, and so the slot, but
		// must not drop records. The topics exist before the first record
		// (EnsureTopics), so an unknown topic is a broker still loading its
		// metadata or a topic deleted under us: keep retrying there too.
		kgo.UnknownTopicRetries(-1),
		kgo.WithCompressor(newLZ4Compressor()),
		kgo.WithLogger(kgoLogger{o.Logger}),
	)
	if err != nil {
		return nil, fmt.Errorf("create kafka client: %w", err)
	}
	p := &Producer{o: o, cl: cl, adm: kadm.NewClient(cl), log: o.Logger}
	p.free.New = func() any { return p.newInflight() }
	return p, nil
}

// EnsureTopics creates the missing topics with cleanup.policy=compact and
// verifies that existing ones are compacted. Topics that cannot be used are
// reported together as a *TopicError; other errors (brokers unreachable)
// are worth retrying.
func (p *Producer) EnsureTopics(ctx context.Context, topics []string) error {
	_, err := p.topics(ctx, topics, true)
	return err
}

// CheckTopics does what EnsureTopics does without creating anything: it
// returns the topics that are missing, and a *TopicError for existing
// topics that cannot be used.
func (p *Producer) CheckTopics(ctx context.Context, topics []string) (missing []string, err error) {
	return p.topics(ctx, topics, false)
}

func (p *Producer) topics(ctx context.Context, topics []string, create bool) (missingTopics []string, err error) {
	topics = slices.Compact(slices.Sorted(slices.Values(topics)))
	// Look before creating: a cluster may let the bridge write to topics
	// it may not create, and answers a create with an authorization
	// error before it checks whether the topic exists.
	details, err := p.adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list topics %s: %w", strings.Join(topics, ", "), err)
	}
	var problems, missing, existing []string
	for _, t := range topics {
		switch d, ok := details[t]; {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
		case d.Err == nil:
			existing = append(existing, t)
		case kerr.IsRetriable(d.Err):
			return nil, fmt.Errorf("list topic %q: %w", t, d.Err)
		default:
			problems = append(problems, fmt.Sprintf("topic %q: %v", t, d.Err))
		}
	}
	if len(missing) > 0 && !create {
		missingTopics = missing
	} else if len(missing) > 0 {
		compact := "compact"
		maxBytes := strconv.Itoa(int(p.o.MaxMessageBytes))
		created, err := p.adm.CreateTopics(ctx, p.o.Partitions, p.o.ReplicationFactor,
			map[string]*string{"cleanup.policy": &compact, "max.message.bytes": &maxBytes}, missing...)
		if err != nil {
			return nil, fmt.Errorf("create topics %s: %w", strings.Join(missing, ", "), err)
		}
		for _, t := range missing {
			r := created[t]
			switch {
			case r.Err == nil:
				p.log.Info("created topic", "topic", t, "partitions", p.o.Partitions, "cleanup_policy", "compact")
			case errors.Is(r.Err, kerr.TopicAlreadyExists): // created meanwhile by someone else
				existing = append(existing, t)
			case kerr.IsRetriable(r.Err):
				return nil, fmt.Errorf("create topic %q: %w", t, r.Err)
			default:
				problems = append(problems, fmt.Sprintf("topic %q: create: %v", t, r.Err))
			}
		}
	}
	if len(existing) > 0 {
		configs, err := p.adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil {
			return nil, fmt.Errorf("describe topic configs of %s: %w", strings.Join(existing, ", "), err)
		}
		for _, rc := range configs {
			if rc.Err != nil {
				if kerr.IsRetriable(rc.Err) {
					return nil, fmt.Errorf("describe configs of topic %q: %w", rc.Name, rc.Err)
				}
				problems = append(problems, fmt.Sprintf("topic %q: describe configs: %v", rc.Name, rc.Err))
				continue
			}
			policy := "delete" // Kafka's default when the topic does not set it
			for _, c := range rc.Configs {
				if c.Key == "cleanup.policy" && c.Value != nil {
					policy = *c.Value
				}
			}
			if policy == "compact" {
				continue
			}
			if p.o.AllowUncompacted {
				p.log.Warn("topic is not compacted; writing to it because kafka.allow_uncompacted_topics is set",
					"topic", rc.Name, "cleanup_policy", policy)
				continue
			}
			problems = append(problems, fmt.Sprintf(
				"topic %q exists with cleanup.policy=%s, not compact: consumers reading it from the start would miss the state of entities whose records were deleted; "+
					"run kafka-configs --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact, "+
					"or set kafka.allow_uncompacted_topics: true to use it anyway", rc.Name, policy, rc.Name))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return missingTopics, &TopicError{Problems: problems}
	}
	return missingTopics, nil
}

// TopicError lists topics the bridge cannot use as they are: retrying does
// not help, the operator must act.
type TopicError struct {
	Problems []string
}

func (e *TopicError) Error() string { return strings.Join(e.Problems, "\n") }

// Produce queues m and calls done once with nil after Kafka acknowledged
// it, or with the error that made it fail. Produce blocks while
// MaxBufferedRecords records await acknowledgement. Cancelling ctx fails
// the records produced with it that are not yet sent, so a graceful stop
// must produce with a context that outlives the stop of reading. A message
// without a key is refused with an error and done is not called.
// Produce keeps m's key and value until done is called, and nothing else
// of m: the caller may reuse m once Produce returns. done runs on a client
// goroutine and must not block.
func (p *Producer) Produce(ctx context.Context, m *Message, done func(error)) error {
	if len(m.Key) == 0 {
		return fmt.Errorf("message for topic %q (%s) has an empty key; refusing to write it to a compacted topic", m.Topic, m.ID)
	}
	f := p.free.Get().(*inflight)
	f.set(m)
	f.done = done
	p.cl.Produce(ctx, &f.rec, f.promise)
	return nil
}

// newInflight returns an inflight whose promise reports to its done and
// then recycles it.
func (p *Producer) newInflight() *inflight {
	f := &inflight{}
	f.promise = func(r *kgo.Record, err error) {
		if errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
			err = fmt.Errorf("record %s for topic %q has %d bytes, more than Kafka accepts: raise the topic's max.message.bytes and kafka.max_message_bytes: %w",
				f.header(HeaderID), r.Topic, len(r.Key)+len(r.Value), err)
		}
		done := f.done
		f.reset()
		p.free.Put(f)
		done(err)
	}
	return f
}

// Flush blocks until every produced message was acknowledged or failed, or
// ctx ends.
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush kafka producer: %w", err)
	}
	return nil
}

// Close closes the client. Messages not yet acknowledged fail; call Flush first.
func (p *Producer) Close() { p.cl.Close() }

// kgoLogger adapts slog to franz-go's logger at warn level and above: the
// client's info logs are too chatty for an operator's log.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	switch level {
	case kgo.LogLevelError:
		k.l.Error("kafka: "+msg, kv...)
	default:
		k.l.Warn("kafka: "+msg, kv...)
	}
}

// EndOffsets returns the next offset of every partition of topic: the
// offset its next record will get.
func (p *Producer) EndOffsets(ctx context.Context, topic string) ([]int64, error) {
	var listed kadm.ListedOffsets
	var err error
	// A topic just created may take a moment to reach every broker.
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		listed, err = p.adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = listed.Error()
		}
		if err == nil || !kerr.IsRetriable(err) || wait >= time.Second {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets of topic %q: %w", topic, err)
	}
	var ends []int64
	listed.Each(func(o kadm.ListedOffset) {
		for int(o.Partition) >= len(ends) {
			ends = append(ends, 0)
		}
		ends[o.Partition] = o.Offset
	})
	return ends, nil
}

// Put writes one record without headers and waits for its
// acknowledgement. It is for the bridge's own small records (backfill
// progress), not for entity states.
func (p *Producer) Put(ctx context.Context, topic string, key, value []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("put to topic %q: empty key", topic)
	}
	if err := p.cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: key, Value: value}).FirstErr(); err != nil {
		return fmt.Errorf("write to topic %q: %w", topic, err)
	}
	return nil
}

// Scan reads topic from the start of each partition up to, not including,
// the end offsets given (a partition missing from ends is not read), and
// calls fn for every record in offset order within its partition. It reads
// with a client of its own and no consumer group, so it leaves nothing
// behind on the broker.
func (p *Producer) Scan(ctx context.Context, topic string, ends []int64, fn func(partition int32, offset int64, key, value []byte) error) error {
	// A partition whose records were all deleted (DeleteRecords, or
	// retention on a topic that is not compacted) has nothing below its
	// end to wait for.
	starts, err := p.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("list start offsets of topic %q: %w", topic, err)
	}
	last := make(map[int32]int64) // offset of the last record to read
	from := make(map[int32]kgo.Offset)
	for part, end := range ends {
		if start, ok := starts.Lookup(topic, int32(part)); ok && start.Offset >= end {
			continue
		}
		if end > 0 {
			last[int32(part)] = end - 1
			from[int32(part)] = kgo.NewOffset().AtStart()
		}
	}
	if len(last) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(p.o.Brokers...),
		kgo.ClientID(p.o.ClientID),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		// Compaction keeps a partition's last batch, so its last offset
		// is always there to be read; control records (a transaction's
		// commit marker) are kept so that reaching it is seen.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.FetchMaxPartitionBytes(4<<20),
		kgo.WithLogger(kgoLogger{p.log}),
	)
	if err != nil {
		return fmt.Errorf("read topic %q: %w", topic, err)
	}
	defer cl.Close()
	for len(last) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read topic %q: %w", topic, err)
		}
		for _, fe := range fetches.Errors() {
			return fmt.Errorf("read topic %q partition %d: %w", topic, fe.Partition, fe.Err)
		}
		var ferr error
		fetches.EachRecord(func(r *kgo.Record) {
			end, reading := last[r.Partition]
			if ferr != nil || !reading || r.Offset > end {
				return
			}
			if r.Offset == end {
				delete(last, r.Partition)
			}
			if !r.Attrs.IsControl() {
				ferr = fn(r.Partition, r.Offset, r.Key, r.Value)
			}
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}
