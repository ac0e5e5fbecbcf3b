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

// record converts m into a kgo.Record with its headers. The variable header
// values share one buffer, so a record costs a handful of allocations
// whatever its number of headers.
func (m *Message) record() *kgo.Record {
	subject := m.Subject
	if subject == "" {
		subject = string(m.Key)
	}
	r := &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}
	r.Headers = make([]kgo.RecordHeader, 0, 11)
	buf := make([]byte, 0, len(m.ID)+len(m.Source)+len(m.Type)+len(subject)+len(m.Table)+len(m.Op)+64)
	add := func(k string, v []byte) {
		if len(v) > 0 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: v})
		}
	}
	// addStr appends v to buf and adds the header as a slice of it; buf
	// never grows past its capacity, so earlier slices stay valid.
	addStr := func(k string, appendV func([]byte) []byte) {
		start := len(buf)
		buf = appendV(buf)
		add(k, buf[start:len(buf):len(buf)])
	}
	str := func(s string) func([]byte) []byte { return func(b []byte) []byte { return append(b, s...) } }

	add(HeaderSpecVersion, specVersionBytes)
	addStr(HeaderID, str(m.ID))
	addStr(HeaderSource, str(m.Source))
	addStr(HeaderType, str(m.Type))
	addStr(HeaderSubject, str(subject))
	if !m.Time.IsZero() {
		addStr(HeaderTime, func(b []byte) []byte { return m.Time.UTC().AppendFormat(b, time.RFC3339Nano) })
	}
	add(HeaderContentType, contentTypeBytes)
	if m.LSN != 0 {
		addStr(HeaderLSN, func(b []byte) []byte { return appendLSN(b, m.LSN) })
	}
	if m.XID != 0 {
		addStr(HeaderXID, func(b []byte) []byte { return strconv.AppendUint(b, uint64(m.XID), 10) })
	}
	addStr(HeaderTable, str(m.Table))
	addStr(HeaderOp, str(m.Op))
	return r
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
