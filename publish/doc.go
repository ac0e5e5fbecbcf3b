// Package publish owns Kafka: it creates and verifies the compacted topics,
// turns records into Kafka messages with CloudEvents binary-mode headers, and
// produces them with an idempotent, acks=all producer.
//
// Guarantees kept here:
//   - every message has a non-empty key (Kafka's compaction needs one, and
//     some brokers accept null keys on compacted topics without complaint);
//   - a tombstone is a message with a nil value and the same headers as a
//     state message;
//   - keys go through the client's default murmur2 key partitioner, so the
//     same key always lands on the same partition and per-key order follows
//     produce order;
//   - a topic that exists but is not compacted is refused unless the
//     operator explicitly allows it;
//   - each message's completion callback fires exactly once, after Kafka
//     acknowledged it (all in-sync replicas) or after a permanent failure.
//     Transient broker failures are retried without limit, so an outage
//     delays acknowledgements but loses nothing.
package publish
