package mapping

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/statefeed/statefeed/cdc"
)

// TestProjectNullKeyOutsideFilter: a mapping keyed by a nullable column
// whose filter leaves out rows where it is NULL never publishes such rows,
// so their changes must not stop the bridge with a "key is NULL" error.
func TestProjectNullKeyOutsideFilter(t *testing.T) {
	s := loadChecked(t, "testdata/keyfilter/email.yaml")
	cust := relationOf(testCatalog()[cdc.TableName{Schema: "legacy", Name: "cust_mstr"}], 1)
	// cst_id, cst_cd, cst_nm, eml_addr, cty_nm, ctry_cd, crd_lmt, rec_stat, upd_ts, tags
	noMail := row("1", "C1", "Ada", "<null>", "<null>", "<null>", "0", "A", "2024-01-02 03:04:05+00", "<null>")
	noMail2 := row("1", "C1", "Ada L", "<null>", "<null>", "<null>", "0", "A", "2024-01-02 03:04:05+00", "<null>")
	mail := row("1", "C1", "Ada", "a@x", "<null>", "<null>", "0", "A", "2024-01-02 03:04:05+00", "<null>")
	mailDeleted := row("1", "C1", "Ada", "a@x", "<null>", "<null>", "0", "D", "2024-01-02 03:04:05+00", "<null>")
	noMailToast := row("1", "C1", "Ada", "<null>", "<null>", "<null>", "0", "A", "2024-01-02 03:04:05+00", "<unchanged>")
	current := &fakeRows{rows: map[string][]cdc.Value{"cst_id=1": noMail}}
	tests := []struct {
		name string
		c    cdc.Change
		rr   RowReader
		want string
	}{
		{"insert without key", cdc.Change{Op: cdc.Insert, Relation: cust, New: noMail}, nil, ""},
		{"update without key", cdc.Change{Op: cdc.Update, Relation: cust, Old: noMail, New: noMail2}, nil, ""},
		{"update gains a key", cdc.Change{Op: cdc.Update, Relation: cust, Old: noMail, New: mail}, nil,
			`a@x {"email":"a@x","name":"Ada"}`},
		{"update loses the key", cdc.Change{Op: cdc.Update, Relation: cust, Old: mail, New: noMail}, nil, "a@x tombstone"},
		{"update of a soft-deleted row loses the key", cdc.Change{Op: cdc.Update, Relation: cust, Old: mailDeleted, New: noMail}, nil, ""},
		{"read back without key", cdc.Change{Op: cdc.Update, Relation: cust, Old: mail, New: noMailToast}, current, "a@x tombstone"},
		{"row gone without key", cdc.Change{Op: cdc.Update, Relation: cust, Old: mail, New: noMailToast}, &fakeRows{}, "a@x tombstone"},
		{"delete without key", cdc.Change{Op: cdc.Delete, Relation: cust, Old: noMail}, nil, ""},
	}
	p := NewProjector(s)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := p.Project(context.Background(), &tt.c, tt.rr, nil)
			if err != nil {
				t.Fatalf("Project: %v", err)
			}
			var got []string
			for _, r := range recs {
				if r.Value == nil {
					got = append(got, string(r.Key)+" tombstone")
				} else {
					got = append(got, string(r.Key)+" "+string(r.Value))
				}
			}
			if diff := cmp.Diff(tt.want, strings.Join(got, "; ")); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
		})
	}
	// A row in the filter with a NULL key is still an error.
	inNull := row("1", "C1", "Ada", "<null>", "<null>", "<null>", "0", "A", "2024-01-02 03:04:05+00", "<null>")
	s2 := loadChecked(t, "testdata/project/customer.yaml")
	inNull[1] = cdc.Value{Kind: cdc.Null}
	if _, err := NewProjector(s2).Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: cust, New: inNull}, nil, nil); err == nil || !strings.Contains(err.Error(), "is NULL") {
		t.Errorf("insert of a row in the filter with a NULL key = %v, want a NULL key error", err)
	}
	// An empty text key is no key either: outside the filter nothing is
	// published, inside it is an error saying what to do.
	empty := row("1", "C1", "Ada", "", "<null>", "<null>", "0", "A", "2024-01-02 03:04:05+00", "<null>")
	emptyDeleted := row("1", "C1", "Ada", "", "<null>", "<null>", "0", "D", "2024-01-02 03:04:05+00", "<null>")
	if recs, err := p.Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: cust, New: emptyDeleted}, nil, nil); err != nil || len(recs) != 0 {
		t.Errorf("insert of a filtered-out row with an empty key = %v, %v; want nothing", recs, err)
	}
	if _, err := p.Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: cust, New: empty}, nil, nil); err == nil || !strings.Contains(err.Error(), "is empty") || !strings.Contains(err.Error(), "filter") {
		t.Errorf("insert of a row in the filter with an empty key = %v, want an empty key error that suggests a filter", err)
	}
	// ProjectRow of a filtered-out row without a key: not in, no error.
	if _, v, in, err := s.Mappings[0].ProjectRow(cust, noMail); err != nil || in || v != nil {
		t.Errorf("ProjectRow of a filtered-out row with a NULL key = %q %v %v", v, in, err)
	}
}

// TestProjectStopsWhenMappedTableIsRenamed: a renamed table stays in the
// publication and its changes keep coming under the new name. They must
// not be skipped silently as changes of an unmapped table.
func TestProjectStopsWhenMappedTableIsRenamed(t *testing.T) {
	s := loadChecked(t, "testdata/project/people.yaml")
	rel := relationOf(testCatalog()[cdc.TableName{Schema: "public", Name: "customers"}], 2)
	p := NewProjector(s)
	if _, err := p.Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: rel, New: row("1", "a@b", "A")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	renamed := &cdc.Relation{ID: rel.ID, Table: cdc.TableName{Schema: "public", Name: "clients"}, ReplicaIdentity: 'd', Columns: rel.Columns}
	recs, err := p.Project(context.Background(), &cdc.Change{Op: cdc.Insert, Relation: renamed, New: row("2", "c@d", "C")}, nil, nil)
	want := `mapping testdata/project/people.yaml: table public.customers was renamed to public.clients while the bridge was running; update the mapping and restart the bridge — the slot was not confirmed past this change`
	if err == nil || err.Error() != want {
		t.Errorf("insert into the renamed table = %d records, error %v\nwant %s", len(recs), err, want)
	}
}
