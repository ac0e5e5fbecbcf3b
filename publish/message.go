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
	HeaderOp          = "ce_op"    // insert, update, delete, truncate, or snapshot
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

// record converts m into a kgo.Record with its headers.
func (m *Message) record() *kgo.Record {
	subject := m.Subject
	if subject == "" {
		subject = string(m.Key)
	}
	r := &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}
	r.Headers = make([]kgo.RecordHeader, 0, 11)
	add := func(k, v string) {
		if v != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	add(HeaderSpecVersion, SpecVersion)
	add(HeaderID, m.ID)
	add(HeaderSource, m.Source)
	add(HeaderType, m.Type)
	add(HeaderSubject, subject)
	if !m.Time.IsZero() {
		add(HeaderTime, m.Time.UTC().Format(time.RFC3339Nano))
	}
	add(HeaderContentType, ContentType)
	if m.LSN != 0 {
		add(HeaderLSN, m.LSN.String())
	}
	if m.XID != 0 {
		add(HeaderXID, strconv.FormatUint(uint64(m.XID), 10))
	}
	add(HeaderTable, m.Table)
	add(HeaderOp, m.Op)
	return r
}
