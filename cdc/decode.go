package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
)

// Decoder turns pgoutput (protocol version 1) messages into Changes. It
// keeps the relation and type caches that the stream builds up, so one
// Decoder must see every message of a replication session in order. It may
// be kept across sessions: pgoutput announces every relation again before
// its first use in a new session, and an unchanged announcement keeps the
// *Relation the Decoder already has.
//
// Numbering: the row changes of a transaction (Insert, Update, Delete,
// Truncate) get Seq 0, 1, 2, ... in stream order. Begin has Seq 0 and Commit
// has the number of row changes, so Seq is stable across replays of the same
// transaction.
//
// The Tx of a transaction is shared by its Begin, its row changes and its
// Commit. Tx.EndLSN is not in the Begin message: the Decoder sets it when it
// decodes the Commit, so read it from the Commit change only.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	relations map[uint32]*Relation
	types     map[uint32]string

	tx     *Tx
	seq    int
	origin string
}

// NewDecoder returns a Decoder with empty caches.
func NewDecoder() *Decoder {
	return &Decoder{
		relations: make(map[uint32]*Relation),
		types:     make(map[uint32]string),
	}
}

// Decode decodes one pgoutput message, the payload of an XLogData message
// that started at walStart. It returns false for messages that carry no
// Change (Relation, Type, Origin, logical decoding messages).
//
// Text values of the Change alias data: the caller must not reuse data while
// the Change is in use. Malformed input is an error, never a panic; after an
// error the Decoder must not be used further.
func (d *Decoder) Decode(walStart pglogrepl.LSN, data []byte) (Change, bool, error) {
	if d.relations == nil {
		d.relations = make(map[uint32]*Relation)
		d.types = make(map[uint32]string)
	}
	if len(data) == 0 {
		return Change{}, false, fmt.Errorf("decode message at %s: empty message", walStart)
	}
	r := reader{b: data, off: 1}
	var (
		c   Change
		ok  bool
		err error
	)
	switch data[0] {
	case 'B':
		c, ok, err = d.begin(&r)
	case 'C':
		c, ok, err = d.commit(&r)
	case 'O':
		r.u64() // commit LSN on the origin server
		name := r.cstring()
		if r.err == nil {
			d.origin = name
		}
	case 'R':
		err = d.relation(&r)
	case 'Y':
		oid := r.u32()
		schema := r.cstring()
		name := r.cstring()
		if r.err == nil {
			d.types[oid] = schema + "." + name
		}
	case 'M':
		c, ok, err = d.message(&r)
	case 'I':
		c, ok, err = d.insert(&r)
	case 'U':
		c, ok, err = d.update(&r)
	case 'D':
		c, ok, err = d.delete(&r)
	case 'T':
		c, ok, err = d.truncate(&r)
	default:
		return Change{}, false, fmt.Errorf("decode message at %s: unknown message type %q (is the slot using pgoutput with proto_version 1?)", walStart, data[0])
	}
	if err == nil {
		err = r.err
	}
	if err == nil && r.off != len(data) {
		err = fmt.Errorf("%d trailing bytes", len(data)-r.off)
	}
	if err != nil {
		return Change{}, false, fmt.Errorf("decode %s message at %s: %w", messageName(data[0]), walStart, err)
	}
	return c, ok, nil
}

// TypeName returns the schema-qualified name of a type announced by a Type
// message. pgoutput announces only types that are not built in.
func (d *Decoder) TypeName(oid uint32) (string, bool) {
	name, ok := d.types[oid]
	return name, ok
}

// Relation returns the relation last announced with the given ID.
func (d *Decoder) Relation(id uint32) (*Relation, bool) {
	rel, ok := d.relations[id]
	return rel, ok
}

// InTransaction reports whether a Begin has been decoded without its Commit.
func (d *Decoder) InTransaction() bool { return d.tx != nil }

// newSession forgets a transaction left open by the end of the previous
// session: a new session starts from the confirmed LSN, which is never in
// the middle of a transaction's stream, so the server sends that
// transaction again from its Begin. The relation and type caches stay.
func (d *Decoder) newSession() {
	d.tx = nil
	d.seq = 0
	d.origin = ""
}

func (d *Decoder) begin(r *reader) (Change, bool, error) {
	final := pglogrepl.LSN(r.u64())
	ts := r.u64()
	xid := r.u32()
	if r.err != nil {
		return Change{}, false, r.err
	}
	if d.tx != nil {
		return Change{}, false, fmt.Errorf("transaction %d begins before transaction %d committed", xid, d.tx.XID)
	}
	d.tx = &Tx{XID: xid, CommitLSN: final, CommitTime: pgTime(ts)}
	d.seq = 0
	d.origin = ""
	return Change{Op: Begin, Tx: d.tx}, true, nil
}

func (d *Decoder) commit(r *reader) (Change, bool, error) {
	r.u8() // flags, unused
	commitLSN := pglogrepl.LSN(r.u64())
	end := pglogrepl.LSN(r.u64())
	r.u64() // commit time, already known from Begin
	if r.err != nil {
		return Change{}, false, r.err
	}
	tx := d.tx
	if tx == nil {
		return Change{}, false, errors.New("commit without a transaction")
	}
	if commitLSN != tx.CommitLSN {
		return Change{}, false, fmt.Errorf("commit LSN %s does not match the final LSN %s announced by Begin of transaction %d", commitLSN, tx.CommitLSN, tx.XID)
	}
	if end < commitLSN {
		return Change{}, false, fmt.Errorf("transaction %d ends at %s, before its commit LSN %s", tx.XID, end, commitLSN)
	}
	tx.EndLSN = end
	d.tx = nil
	return Change{Op: Commit, Tx: tx, Seq: d.seq}, true, nil
}

// message decodes a logical decoding message (pg_logical_emit_message),
// sent only when the "messages" option is on. A transactional message is
// part of its transaction's stream and numbered like a row change; a
// non-transactional one arrives on its own, with a nil Tx.
func (d *Decoder) message(r *reader) (Change, bool, error) {
	flags := r.u8()
	r.u64() // the message's LSN
	prefix := r.cstring()
	n := r.u32()
	content := r.take(int(n))
	if r.err != nil {
		return Change{}, false, r.err
	}
	c := Change{Op: Message, Prefix: prefix, Content: content}
	if flags&1 != 0 {
		if d.tx == nil {
			return Change{}, false, errors.New("transactional message outside a transaction")
		}
		c.Tx = d.tx
		c.Seq = d.seq
		d.seq++
	}
	return c, true, nil
}

func (d *Decoder) relation(r *reader) error {
	id := r.u32()
	schema := r.cstring()
	name := r.cstring()
	ident := r.u8()
	n := int(r.u16())
	if r.err != nil {
		return r.err
	}
	// Each column takes at least 10 bytes; refuse counts the message cannot hold
	// before allocating for them.
	if n*10 > r.remaining() {
		return fmt.Errorf("relation %d announces %d columns in %d bytes", id, n, r.remaining())
	}
	switch ident {
	case 'd', 'n', 'f', 'i':
	default:
		return fmt.Errorf("relation %s.%s: unknown replica identity %q", schema, name, ident)
	}
	rel := &Relation{
		ID:              id,
		Table:           TableName{Schema: schema, Name: name},
		ReplicaIdentity: ident,
		Columns:         make([]Column, n),
	}
	for i := range rel.Columns {
		flags := r.u8()
		rel.Columns[i] = Column{
			Name:     r.cstring(),
			TypeOID:  r.u32(),
			TypeMod:  int32(r.u32()),
			Identity: flags&1 != 0,
		}
	}
	if r.err != nil {
		return r.err
	}
	if old, ok := d.relations[id]; ok && sameRelation(old, rel) {
		return nil
	}
	d.relations[id] = rel
	return nil
}

func sameRelation(a, b *Relation) bool {
	return a.ID == b.ID && a.Table == b.Table && a.ReplicaIdentity == b.ReplicaIdentity &&
		slices.Equal(a.Columns, b.Columns)
}

// rowChange starts a row change: it checks the transaction and resolves the
// relation.
func (d *Decoder) rowChange(r *reader, op Op) (Change, error) {
	id := r.u32()
	if r.err != nil {
		return Change{}, r.err
	}
	if d.tx == nil {
		return Change{}, fmt.Errorf("%s outside a transaction", op)
	}
	rel, ok := d.relations[id]
	if !ok {
		return Change{}, fmt.Errorf("%s for relation %d that was never announced", op, id)
	}
	c := Change{Op: op, Tx: d.tx, Seq: d.seq, Relation: rel}
	d.seq++
	return c, nil
}

func (d *Decoder) insert(r *reader) (Change, bool, error) {
	c, err := d.rowChange(r, Insert)
	if err != nil {
		return Change{}, false, err
	}
	if t := r.u8(); t != 'N' && r.err == nil {
		return Change{}, false, fmt.Errorf("insert into %s: expected new tuple 'N', got %q", c.Relation.Table, t)
	}
	if c.New, err = r.tuple(c.Relation, false); err != nil {
		return Change{}, false, fmt.Errorf("insert into %s: %w", c.Relation.Table, err)
	}
	return c, true, nil
}

func (d *Decoder) update(r *reader) (Change, bool, error) {
	c, err := d.rowChange(r, Update)
	if err != nil {
		return Change{}, false, err
	}
	t := r.u8()
	if t == 'K' || t == 'O' {
		if c.Old, err = r.tuple(c.Relation, t == 'K'); err != nil {
			return Change{}, false, fmt.Errorf("update of %s: old tuple: %w", c.Relation.Table, err)
		}
		t = r.u8()
	}
	if t != 'N' && r.err == nil {
		return Change{}, false, fmt.Errorf("update of %s: expected tuple 'K', 'O' or 'N', got %q", c.Relation.Table, t)
	}
	if c.New, err = r.tuple(c.Relation, false); err != nil {
		return Change{}, false, fmt.Errorf("update of %s: new tuple: %w", c.Relation.Table, err)
	}
	return c, true, nil
}

func (d *Decoder) delete(r *reader) (Change, bool, error) {
	c, err := d.rowChange(r, Delete)
	if err != nil {
		return Change{}, false, err
	}
	t := r.u8()
	if t != 'K' && t != 'O' && r.err == nil {
		return Change{}, false, fmt.Errorf("delete from %s: expected old tuple 'K' or 'O', got %q", c.Relation.Table, t)
	}
	if c.Old, err = r.tuple(c.Relation, t == 'K'); err != nil {
		return Change{}, false, fmt.Errorf("delete from %s: %w", c.Relation.Table, err)
	}
	return c, true, nil
}

func (d *Decoder) truncate(r *reader) (Change, bool, error) {
	n := int(r.u32())
	r.u8() // options: 1 CASCADE, 2 RESTART IDENTITY; the rows are gone either way
	if r.err != nil {
		return Change{}, false, r.err
	}
	if n == 0 || n > r.remaining()/4 {
		return Change{}, false, fmt.Errorf("truncate lists %d relations in %d bytes", n, r.remaining())
	}
	if d.tx == nil {
		return Change{}, false, errors.New("truncate outside a transaction")
	}
	rels := make([]*Relation, n)
	for i := range rels {
		id := r.u32()
		rel, ok := d.relations[id]
		if !ok {
			return Change{}, false, fmt.Errorf("truncate of relation %d that was never announced", id)
		}
		rels[i] = rel
	}
	c := Change{Op: Truncate, Tx: d.tx, Seq: d.seq, Truncated: rels}
	d.seq++
	return c, true, nil
}

func messageName(b byte) string {
	switch b {
	case 'B':
		return "begin"
	case 'C':
		return "commit"
	case 'O':
		return "origin"
	case 'R':
		return "relation"
	case 'Y':
		return "type"
	case 'M':
		return "logical decoding"
	case 'I':
		return "insert"
	case 'U':
		return "update"
	case 'D':
		return "delete"
	case 'T':
		return "truncate"
	}
	return fmt.Sprintf("%q", b)
}

// postgresEpoch is 2000-01-01 00:00:00 UTC, the origin of PostgreSQL's
// timestamps, in microseconds since the Unix epoch.
const postgresEpoch = 946684800 * 1000000

func pgTime(us uint64) time.Time {
	return time.UnixMicro(int64(us) + postgresEpoch).UTC()
}

// reader reads big-endian protocol fields. Reading past the end sets err
// and yields zero values, so a message is checked once, after it is read.
type reader struct {
	b   []byte
	off int
	err error
}

var errShort = errors.New("message is truncated")

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = errShort
		return nil
	}
	// The capacity is capped so that appending to a value cannot overwrite
	// the bytes that follow it in the message.
	b := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return b
}

func (r *reader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) cstring() string {
	if r.err != nil {
		return ""
	}
	i := slices.Index(r.b[r.off:], 0)
	if i < 0 {
		r.err = errors.New("string is not terminated")
		return ""
	}
	s := string(r.b[r.off : r.off+i])
	r.off += i + 1
	return s
}

// tuple reads a TupleData into one []Value indexed by column position. In a
// key tuple ('K') pgoutput sends NULL for the columns outside the replica
// identity; they are reported as Absent, not Null.
func (r *reader) tuple(rel *Relation, key bool) ([]Value, error) {
	n := int(r.u16())
	if r.err != nil {
		return nil, r.err
	}
	if n != len(rel.Columns) {
		return nil, fmt.Errorf("tuple has %d columns, relation has %d", n, len(rel.Columns))
	}
	vals := make([]Value, n)
	for i := range vals {
		switch k := r.u8(); k {
		case 'n':
			if !key || rel.Columns[i].Identity {
				vals[i].Kind = Null
			}
		case 'u':
			vals[i].Kind = Unchanged
		case 't':
			l := r.u32()
			vals[i] = Value{Kind: Text, Text: r.take(int(l))}
		default:
			if r.err != nil {
				return nil, r.err
			}
			if k == 'b' {
				return nil, fmt.Errorf("column %q is in binary format; the bridge requests text", rel.Columns[i].Name)
			}
			return nil, fmt.Errorf("column %q: unknown value kind %q", rel.Columns[i].Name, k)
		}
	}
	return vals, r.err
}
