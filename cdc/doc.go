// Package cdc is the replication side of the bridge: it checks and sets up
// the publication and the logical replication slot, reads the pgoutput
// stream, decodes it into typed Changes, and reads rows back when the
// stream did not carry a value (unchanged TOAST).
//
// Guarantees kept here:
//   - Changes come in commit order, each transaction framed by Begin and
//     Commit, with values in PostgreSQL's text format indexed by column
//     position; a value the WAL did not carry is Unchanged, never NULL.
//   - The slot advances only through Source.Confirm (and, while nothing
//     emitted is unconfirmed, by the server's keepalive position; see
//     Source). Standby status keeps flowing while the consumer of the
//     changes is blocked, so a slow or unavailable Kafka does not get the
//     replication connection killed by wal_sender_timeout.
//   - Malformed stream input is an error, never a panic and never skipped.
//   - Setup never drops anything and never creates a publication FOR ALL
//     TABLES; when it may not create what is missing it returns the exact
//     SQL a DBA should run.
//   - Reads (catalog, row read-back) are single short statements that take
//     no locks beyond ACCESS SHARE.
package cdc
