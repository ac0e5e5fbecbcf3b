package cdc

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Op is the kind of a change read from the replication stream.
type Op uint8

const (
	// Begin opens a transaction; Change.Tx describes it.
	Begin Op = iota + 1
	// Insert carries a new row in Change.New.
	Insert
	// Update carries the new row in Change.New and, when the replica
	// identity changed or is FULL, the old identity in Change.Old.
	Update
	// Delete carries the old identity (or the whole old row) in Change.Old.
	Delete
	// Truncate lists the truncated relations in Change.Truncated.
	Truncate
	// Commit closes the transaction opened by the last Begin.
	Commit
	// Message is a logical decoding message written with
	// pg_logical_emit_message: Change.Prefix and Change.Content. Tx is nil
	// for a non-transactional message.
	Message
)

// String returns the lower-case name of the operation ("insert", "update", ...).
func (o Op) String() string {
	switch o {
	case Begin:
		return "begin"
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	case Commit:
		return "commit"
	case Message:
		return "message"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Kind says what a Value holds.
type Kind uint8

const (
	// Absent marks a column the message did not describe at all (for
	// example a non-identity column of an old tuple). It is the zero value.
	Absent Kind = iota
	// Null is SQL NULL.
	Null
	// Unchanged is a TOASTed value that pgoutput did not send because the
	// update did not change it ('u'). It is never NULL: the bridge must read
	// the current value back from the source.
	Unchanged
	// Text is a value in PostgreSQL's text output format, in Value.Text.
	Text
)

// Value is one column of a tuple in PostgreSQL's text format. Text may
// alias a buffer owned by the Change it belongs to; copy it to keep it.
type Value struct {
	Kind Kind
	Text []byte
}

// TableName is a schema-qualified table name, unquoted.
type TableName struct {
	Schema string
	Name   string
}

// String returns schema.name, quoting neither part.
func (t TableName) String() string { return t.Schema + "." + t.Name }

// Quoted returns the name as SQL: "schema"."name", both parts quoted.
func (t TableName) Quoted() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// Column describes one column of a relation as announced by pgoutput.
type Column struct {
	Name    string
	TypeOID uint32
	TypeMod int32
	// Identity is true when the column is part of the replica identity
	// (every column under REPLICA IDENTITY FULL).
	Identity bool
}

// Relation is the shape of a table as last announced on the stream.
// A Relation is immutable once emitted: a schema change produces a new
// *Relation with the same ID, so pointer inequality means "re-bind".
type Relation struct {
	ID              uint32
	Table           TableName
	ReplicaIdentity byte // 'd' default, 'n' nothing, 'f' full, 'i' index
	Columns         []Column
}

// ColumnIndex returns the position of the named column, or -1.
func (r *Relation) ColumnIndex(name string) int {
	for i := range r.Columns {
		if r.Columns[i].Name == name {
			return i
		}
	}
	return -1
}

// Tx describes the transaction a change belongs to. pgoutput sends only
// committed transactions, so the commit LSN and time are known at Begin;
// the end LSN arrives with the Commit message, and the decoder sets it on
// the shared *Tx before it hands the Commit change on.
type Tx struct {
	XID        uint32
	CommitLSN  pglogrepl.LSN // LSN of the commit record
	EndLSN     pglogrepl.LSN // end of the commit record, set at Commit: the position to confirm once all of the transaction is published
	CommitTime time.Time
}

// Change is one message of the stream, in commit order: Begin, the row
// changes of one transaction, Commit. Values are indexed by the position of
// the column in Relation.Columns.
type Change struct {
	Op  Op
	Tx  *Tx
	Seq int // ordinal of the change within its transaction, from 0; stable across replays

	Relation  *Relation   // Insert, Update, Delete
	Old       []Value     // Update (when sent), Delete; nil when not sent
	New       []Value     // Insert, Update
	Truncated []*Relation // Truncate

	Prefix  string // Message
	Content []byte // Message; aliases the stream's buffer like Values do
}
