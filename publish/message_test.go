package publish

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRecordHeaders(t *testing.T) {
	when := time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		m    Message
		want [][2]string
	}{
		{
			name: "state",
			m: Message{
				Topic: "crm.customer.v1", Key: []byte("C0000001"), Value: []byte(`{"a":1}`),
				ID: "0/16B3748/3/0", Source: "postgresql://legacy/legacy.cust_mstr", Type: "customer",
				Time: when, LSN: 0x16B3748, XID: 731, Table: "legacy.cust_mstr", Op: "update",
			},
			want: [][2]string{
				{"ce_specversion", "1.0"},
				{"ce_id", "0/16B3748/3/0"},
				{"ce_source", "postgresql://legacy/legacy.cust_mstr"},
				{"ce_type", "customer"},
				{"ce_subject", "C0000001"},
				{"ce_time", "2026-03-04T04:06:07.89Z"},
				{"content-type", "application/json"},
				{"ce_lsn", "0/16B3748"},
				{"ce_xid", "731"},
				{"ce_table", "legacy.cust_mstr"},
				{"ce_op", "update"},
			},
		},
		{
			name: "tombstone carries the same headers",
			m: Message{
				Topic: "crm.customer.v1", Key: []byte(`["A",1]`), Value: nil,
				ID: "0/1/0/0", Source: "postgresql://legacy/legacy.cust_mstr", Type: "customer",
				Time: when, LSN: 1, XID: 2, Table: "legacy.cust_mstr", Op: "delete",
			},
			want: [][2]string{
				{"ce_specversion", "1.0"},
				{"ce_id", "0/1/0/0"},
				{"ce_source", "postgresql://legacy/legacy.cust_mstr"},
				{"ce_type", "customer"},
				{"ce_subject", `["A",1]`},
				{"ce_time", "2026-03-04T04:06:07.89Z"},
				{"content-type", "application/json"},
				{"ce_lsn", "0/1"},
				{"ce_xid", "2"},
				{"ce_table", "legacy.cust_mstr"},
				{"ce_op", "delete"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f inflight
			f.set(&tt.m)
			r := &f.rec
			var got [][2]string
			for _, h := range r.Headers {
				got = append(got, [2]string{h.Key, string(h.Value)})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			if string(r.Key) != string(tt.m.Key) || (r.Value == nil) != (tt.m.Value == nil) {
				t.Errorf("record key/value = %q/%q, want %q/%q", r.Key, r.Value, tt.m.Key, tt.m.Value)
			}
		})
	}
}

func BenchmarkRecord(b *testing.B) {
	m := Message{
		Topic: "crm.customer.v1", Key: []byte("C0000001"), Value: []byte(`{"a":1}`),
		ID: "0/16B3748/3/0", Source: "postgresql://legacy/legacy.cust_mstr", Type: "customer",
		Time: time.Now(), LSN: 0x16B3748, XID: 731, Table: "legacy.cust_mstr", Op: "update",
	}
	var f inflight
	b.ReportAllocs()
	for b.Loop() {
		f.set(&m)
	}
}
