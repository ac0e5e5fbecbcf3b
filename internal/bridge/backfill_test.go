package bridge

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/statefeed/statefeed/internal/golden"
	"github.com/statefeed/statefeed/snapshot"
)

// TestBackfillDisplay renders the progress lines and the summary of jobs
// in the states a person watching bridge backfill sees.
func TestBackfillDisplay(t *testing.T) {
	created := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	first := &snapshot.Job{ID: "initial-1", Reason: snapshot.Initial, State: snapshot.Running, Created: created,
		Tables: []*snapshot.TableJob{
			{Table: "legacy.cust_mstr", Estimate: 100000, Planned: true, Ranges: []*snapshot.Range{{Rows: 10000}}},
			{Table: "legacy.ord_hdr", Planned: true, Ranges: []*snapshot.Range{{Rows: 0}}},
		}}
	later := &snapshot.Job{ID: "initial-1", Reason: snapshot.Initial, State: snapshot.Running, Created: created, Rows: 50000,
		Tables: []*snapshot.TableJob{
			{Table: "legacy.cust_mstr", Estimate: 100000, Planned: true, Ranges: []*snapshot.Range{{Rows: 40000}}},
			{Table: "legacy.ord_hdr", Planned: true, Ranges: []*snapshot.Range{{Rows: 10000, Done: true}}},
		},
		Topics: map[string]*snapshot.TopicJob{"crm.customer.v1": {Passes: 3, Done: 1}}}
	done := &snapshot.Job{ID: "backfill-2", Reason: snapshot.Requested, State: snapshot.Done, Created: created,
		Finished: created.Add(90 * time.Second), Rows: 120000, Tombstones: 17}
	failed := &snapshot.Job{ID: "backfill-3", Reason: snapshot.Requested, State: snapshot.Failed, Created: created,
		Finished: created.Add(time.Second), Error: `no mapping defines entity "custmer"`}

	var out strings.Builder
	out.WriteString("== running, 10s after the first look\n")
	for _, l := range progressLines(later, first, 10*time.Second) {
		out.WriteString(l + "\n")
	}
	out.WriteString("== summary\n")
	var sum bytes.Buffer
	err := summary([]*snapshot.Job{done, failed}, &sum)
	out.WriteString(sum.String())
	if err == nil || !strings.Contains(err.Error(), "backfill-3") {
		t.Errorf("summary with a failed job: err = %v, want it named", err)
	}
	golden.Check(t, "testdata/backfill_display.golden", out.String())
}
