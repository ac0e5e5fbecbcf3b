// Package mapping owns the YAML entity model: it loads mapping files with
// their positions, validates them against the live catalog, compiles their
// expressions once, and projects each change of the replication stream onto
// zero or more Kafka records — entity states and tombstones — rendered as
// JSON.
//
// Guarantees:
//
//   - Projection is pure and deterministic: the same change and the same
//     current rows give the same records, byte for byte. The RowReader passed
//     to Project is the only database access, and it is used only when the
//     stream did not carry a value the mapping needs (unchanged TOAST).
//   - A value is never a diff: every non-nil Record.Value is the complete
//     document of one entity, and a value the WAL did not send is read back,
//     never rendered as null.
//   - A delete, a row leaving the filter, and a change of the business key
//     produce a tombstone for the old key.
//   - Bad input (a failing expression, a NULL key, a dropped column, a
//     TRUNCATE) is an error that names the mapping file and field and never
//     a row value other than the primary key: the caller stops before
//     confirming past the change, so nothing is skipped silently.
//
// Loading and checking report every problem at once, sorted, one a line, as
// "<file>:<line>: <yaml path>: <what is wrong>; <what to do>".
package mapping
