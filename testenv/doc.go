// Package testenv starts real, throwaway infrastructure for integration
// tests, the demo program and benchmarks: a PostgreSQL cluster initialised
// from the installed server binaries with wal_level=logical, a
// Kafka-protocol broker (franz-go's kfake) that compacts topics with
// cleanup.policy=compact, and a TCP proxy that cuts connections on demand,
// in front of either (BrokerOptions.Proxied routes every broker connection
// through one).
// It also reads topics back and builds their compacted view, which is the
// oracle the convergence tests compare against the source rows.
//
// Nothing here is a mock: PostgreSQL is a real postmaster listening on a
// loopback port, and the broker speaks the Kafka wire protocol over TCP.
//
// Guarantees:
//   - Everything listens on 127.0.0.1 only, on a port picked at start, and
//     lives under its own temporary directory.
//   - Whoever starts a resource closes it. The New… helpers register Close
//     with t.Cleanup; Close is idempotent and never leaves a process or
//     directory behind, killing what does not stop in time. If the test
//     binary itself is killed, PostgreSQL gets an immediate shutdown from
//     the kernel, and the next start removes the directories it left.
//   - A missing PostgreSQL installation is an error that says what to
//     install, never a skipped test.
//   - Waits are polls with deadlines (see [Eventually]); nothing here
//     synchronises with fixed sleeps.
package testenv
