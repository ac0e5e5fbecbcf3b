package testenv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Message is one record read from a topic.
type Message struct {
	Partition int32
	Offset    int64
	Key       []byte // nil for a null key, which the bridge never writes
	Value     []byte // nil for a tombstone
	// Headers holds the record headers; for a repeated header name the last
	// value wins.
	Headers   map[string]string
	Tombstone bool // Value == nil
}

// ReadTopic reads every partition of topic from its start up to its end
// (high watermark) as of the call, and returns the records ordered by
// partition, then offset. Records produced after the call may or may not
// be included. It uses direct partition reads, no consumer group, so it
// leaves nothing behind on the broker. It blocks until done or until ctx
// ends; a topic that does not exist is an error.
func ReadTopic(ctx context.Context, brokers []string, topic string) ([]Message, error) {
	admCl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, fmt.Errorf("read topic %q: %w", topic, err)
	}
	adm := kadm.NewClient(admCl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	var starts kadm.ListedOffsets
	if err == nil {
		starts, err = adm.ListStartOffsets(ctx, topic)
		if err == nil {
			err = starts.Error()
		}
	}
	admCl.Close()
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, fmt.Errorf("read topic %q: topic does not exist", topic)
	}
	if err != nil {
		return nil, fmt.Errorf("read topic %q: list offsets: %w", topic, err)
	}

	// last[p] is the offset of the last record to read in partition p.
	last := make(map[int32]int64)
	from := make(map[int32]kgo.Offset)
	ends.Each(func(o kadm.ListedOffset) {
		start, ok := starts.Lookup(topic, o.Partition)
		if ok && start.Offset >= o.Offset {
			return // empty, or everything deleted
		}
		last[o.Partition] = o.Offset - 1
		from[o.Partition] = kgo.NewOffset().AtStart()
	})
	if len(last) == 0 {
		return nil, nil
	}

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		// A transaction's commit marker can be a partition's last offset;
		// keep control records so that reaching the end is visible.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("read topic %q: %w", topic, err)
	}
	defer cl.Close()

	var msgs []Message
	for len(last) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read topic %q: %d partitions not read to the end: %w", topic, len(last), err)
		}
		for _, fe := range fetches.Errors() {
			return nil, fmt.Errorf("read topic %q partition %d: %w", topic, fe.Partition, fe.Err)
		}
		var done []int32
		fetches.EachRecord(func(r *kgo.Record) {
			end, reading := last[r.Partition]
			if !reading || r.Offset > end {
				return
			}
			if r.Offset == end {
				done = append(done, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			m := Message{
				Partition: r.Partition,
				Offset:    r.Offset,
				Key:       r.Key,
				Value:     r.Value,
				Tombstone: r.Value == nil,
			}
			if len(r.Headers) > 0 {
				m.Headers = make(map[string]string, len(r.Headers))
				for _, h := range r.Headers {
					m.Headers[h.Key] = string(h.Value)
				}
			}
			msgs = append(msgs, m)
		})
		for _, p := range done {
			delete(last, p)
		}
	}
	slices.SortStableFunc(msgs, func(a, b Message) int {
		if c := cmp.Compare(a.Partition, b.Partition); c != 0 {
			return c
		}
		return cmp.Compare(a.Offset, b.Offset)
	})
	return msgs, nil
}

// CompactedView returns what a compacted topic converges to: the last value
// per key, with a tombstone removing its key. Messages with a null key are
// left out, as compaction drops them; count them with NullKeys.
func CompactedView(msgs []Message) map[string][]byte {
	view := make(map[string][]byte)
	for _, m := range msgs {
		switch {
		case m.Key == nil:
		case m.Tombstone:
			delete(view, string(m.Key))
		default:
			view[string(m.Key)] = m.Value
		}
	}
	return view
}

// NullKeys returns how many messages have a null key. The bridge never
// writes one, so tests assert that this is zero.
func NullKeys(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		if m.Key == nil {
			n++
		}
	}
	return n
}

// Eventually calls check every 100 milliseconds until it reports done,
// returns an error, or timeout passes. check's ctx ends at the deadline.
// On timeout the error carries the last reason check gave for not being
// done; an error from check is returned at once, wrapped.
func Eventually(ctx context.Context, timeout time.Duration, check func(ctx context.Context) (done bool, why string, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	why := "the condition was never checked"
	for {
		done, reason, err := check(ctx)
		switch {
		case done:
			return nil
		case err != nil && ctx.Err() == nil:
			return fmt.Errorf("eventually: %w", err)
		case err != nil:
			// check failed because the deadline cut it short; report the
			// last real reason.
		default:
			why = reason
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met within %v: %s", timeout, why)
		case <-tick.C:
		}
	}
}

// DiffViews describes how got differs from want, key by key in sorted
// order: missing keys, extra keys and keys whose values differ (compared
// byte for byte). It shows at most 20 differences and shortens long values.
// It returns "" when the views are equal.
func DiffViews(got, want map[string][]byte) string {
	const maxLines = 20
	keys := slices.Sorted(maps.Keys(want))
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)

	var lines []string
	var missing, extra, changed int
	for _, k := range keys {
		g, inGot := got[k]
		w, inWant := want[k]
		var line string
		switch {
		case !inGot:
			missing++
			line = fmt.Sprintf("missing key %s: want %s", quoteBytes([]byte(k)), quoteBytes(w))
		case !inWant:
			extra++
			line = fmt.Sprintf("extra key %s: got %s", quoteBytes([]byte(k)), quoteBytes(g))
		case !bytes.Equal(g, w):
			changed++
			line = fmt.Sprintf("key %s:\n\tgot  %s\n\twant %s", quoteBytes([]byte(k)), quoteBytes(g), quoteBytes(w))
		default:
			continue
		}
		if len(lines) < maxLines {
			lines = append(lines, line)
		}
	}
	total := missing + extra + changed
	if total == 0 {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "compacted view differs in %d of %d keys (%d missing, %d extra, %d different; got %d keys, want %d):\n",
		total, len(keys), missing, extra, changed, len(got), len(want))
	for _, l := range lines {
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	if total > maxLines {
		fmt.Fprintf(&sb, "... and %d more\n", total-maxLines)
	}
	return sb.String()
}

// quoteBytes quotes b for a diff, shortened to 200 bytes.
func quoteBytes(b []byte) string {
	const maxLen = 200
	if len(b) > maxLen {
		return fmt.Sprintf("%q... (%d bytes)", b[:maxLen], len(b))
	}
	return fmt.Sprintf("%q", b)
}
