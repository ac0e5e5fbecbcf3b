package publish

import (
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"
)

// SpecVersion is the CloudEvents version of the headers.
const SpecVersion = "1.0"

// ContentType is the content-type header of every message, tombstones included.
const ContentType = "application/json"

// Header names of the CloudEvents Kafka protocol binding (binary mode) and of
// statefeed's extension attributes, which point at the change that caused
// the message.
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderSource      = "ce_source"
	HeaderType        = "ce_type"
	HeaderSubject     = "ce_subject"
	HeaderTime        = "ce_time"
	HeaderContentType = "content-type"
	HeaderLSN         = "ce_lsn"   // commit LSN of the source transaction, e.g. "0/16B3748"
	HeaderXID         = "ce_xid"   // source transaction id
	HeaderTable       = "ce_table" // schema-qualified source table
	HeaderOp          = "ce_op"    // the source operation: insert, update or delete
)

// Message is one record to publish. A nil Value is a tombstone.
type Message struct {
	Topic string
	Key   []byte
	Value []byte

	ID      string // ce_id: unique and stable for the same change
	Source  string // ce_source
	Type    string // ce_type: the entity name
	Time    time.Time
	LSN     pglogrepl.LSN
	XID     uint32
	Table   string
	Op      string
	Subject string // ce_subject; the key as text when empty
}

// Constant header values, shared by every record: the client only reads them.
var (
	specVersionBytes = []byte(SpecVersion)
	contentTypeBytes = []byte(ContentType)
)

// numHeaders is the number of headers a record carries at most.
const numHeaders = 11

// inflight is one record between Produce and its acknowledgement, with the
// storage of its headers, so that a record costs no allocation once the
// Producer has recycled a few. The client no longer touches a record once
// its promise has run, which is when it is recycled.
type inflight struct {
	rec     kgo.Record
	headers [numHeaders]kgo.RecordHeader
	buf     []byte // the variable header values; rec.Headers point into it
	done    func(error)
	promise func(*kgo.Record, error) // set once, for the life of the inflight
}

// set makes f's record m's: topic, key, value and headers. Nothing of m but
// its key and value is referenced afterwards.
func (f *inflight) set(m *Message) {
	f.rec = kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: f.headers[:0]}
	// The values share one buffer, which is never grown once headers point
	// into it: 64 bytes cover the time, the LSN and the XID.
	need := len(m.ID) + len(m.Source) + len(m.Type) + max(len(m.Subject), len(m.Key)) + len(m.Table) + len(m.Op) + 64
	if cap(f.buf) < need {
		f.buf = make([]byte, 0, need)
	}
	buf := f.buf[:0]
	add := func(k string, v []byte) {
		if len(v) > 0 {
			f.rec.Headers = append(f.rec.Headers, kgo.RecordHeader{Key: k, Value: v})
		}
	}
	// addBytes appends v to buf and adds the header as a slice of it.
	addBytes := func(k string, start int) {
		add(k, buf[start:len(buf):len(buf)])
	}
	addStr := func(k, v string) {
		start := len(buf)
		buf = append(buf, v...)
		addBytes(k, start)
	}

	add(HeaderSpecVersion, specVersionBytes)
	addStr(HeaderID, m.ID)
	addStr(HeaderSource, m.Source)
	addStr(HeaderType, m.Type)
	if m.Subject != "" {
		addStr(HeaderSubject, m.Subject)
	} else {
		start := len(buf)
		buf = append(buf, m.Key...)
		addBytes(HeaderSubject, start)
	}
	if !m.Time.IsZero() {
		start := len(buf)
		buf = m.Time.UTC().AppendFormat(buf, time.RFC3339Nano)
		addBytes(HeaderTime, start)
	}
	add(HeaderContentType, contentTypeBytes)
	if m.LSN != 0 {
		start := len(buf)
		buf = appendLSN(buf, m.LSN)
		addBytes(HeaderLSN, start)
	}
	if m.XID != 0 {
		start := len(buf)
		buf = strconv.AppendUint(buf, uint64(m.XID), 10)
		addBytes(HeaderXID, start)
	}
	addStr(HeaderTable, m.Table)
	addStr(HeaderOp, m.Op)
}

// header returns the value of the header named k, or nil.
func (f *inflight) header(k string) []byte {
	for _, h := range f.rec.Headers {
		if h.Key == k {
			return h.Value
		}
	}
	return nil
}

// reset drops what f refers to of the message it carried.
func (f *inflight) reset() {
	f.rec = kgo.Record{}
	f.done = nil
}

// appendLSN appends lsn as PostgreSQL writes it: upper-case hex, "16/B374D848".
func appendLSN(b []byte, lsn pglogrepl.LSN) []byte {
	start := len(b)
	b = strconv.AppendUint(b, uint64(lsn>>32), 16)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(uint32(lsn)), 16)
	for i := start; i < len(b); i++ {
		if 'a' <= b[i] && b[i] <= 'f' {
			b[i] -= 'a' - 'A'
		}
	}
	return b
}
