package cdc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/testenv"
)

const setupSchema = `
	CREATE TABLE a (id int PRIMARY KEY);
	CREATE TABLE b (id int PRIMARY KEY);
	CREATE SCHEMA "Odd";
	CREATE TABLE "Odd"."c d" (id int PRIMARY KEY);
	CREATE TABLE other (id int PRIMARY KEY);`

var setupTables = []cdc.TableName{public("a"), public("b"), {Schema: "Odd", Name: "c d"}}

// TestSetupFindings checks what Setup tells a DBA about an existing or
// missing publication and slot, word for word.
func TestSetupFindings(t *testing.T) {
	tests := []struct {
		name    string
		prepare string
		opts    cdc.SetupOptions // Publication, Slot and Tables are filled in
		problem []string
		notes   []string
	}{{
		name: "nothing exists, nothing may be created",
		problem: []string{
			`publication "bridge" does not exist: run CREATE PUBLICATION "bridge" FOR TABLE "public"."a", "public"."b", "Odd"."c d" WITH (publish = 'insert, update, delete, truncate');`,
			`replication slot "bridge" does not exist: run SELECT pg_create_logical_replication_slot('bridge', 'pgoutput'); in this database`,
		},
	}, {
		name:    "publication lacks mapped tables",
		prepare: `CREATE PUBLICATION bridge FOR TABLE a`,
		opts:    cdc.SetupOptions{CreateSlot: true},
		problem: []string{
			`publication "bridge" does not publish "public"."b", "Odd"."c d": run ALTER PUBLICATION "bridge" ADD TABLE "public"."b", "Odd"."c d";`,
		},
	}, {
		name:    "publication skips operations",
		prepare: `CREATE PUBLICATION bridge FOR TABLE a, b, "Odd"."c d" WITH (publish = 'insert, update')`,
		opts:    cdc.SetupOptions{CreateSlot: true},
		problem: []string{
			`publication "bridge" does not publish delete, truncate: run ALTER PUBLICATION "bridge" SET (publish = 'insert, update, delete, truncate');`,
		},
	}, {
		name:    "publication filters rows",
		prepare: `CREATE PUBLICATION bridge FOR TABLE a WHERE (id > 10), b, "Odd"."c d"`,
		opts:    cdc.SetupOptions{CreateSlot: true},
		problem: []string{
			`publication "bridge" filters table "public"."a" with WHERE (id > 10), so the bridge would miss changes: run ALTER PUBLICATION "bridge" SET TABLE ... listing "public"."a" without a WHERE clause`,
		},
	}, {
		name:    "publication has extra tables",
		prepare: `CREATE PUBLICATION bridge FOR TABLE a, b, "Odd"."c d", other`,
		opts:    cdc.SetupOptions{CreateSlot: true},
		notes:   []string{`publication "bridge" also publishes "public"."other", which no mapping uses; the bridge ignores their changes`},
	}, {
		name:    "publication for all tables",
		prepare: `CREATE PUBLICATION bridge FOR ALL TABLES`,
		opts:    cdc.SetupOptions{CreateSlot: true},
		notes:   []string{`publication "bridge" is FOR ALL TABLES; the bridge ignores changes to unmapped tables, but the server still decodes and sends them`},
	}, {
		name:    "slot with another plugin",
		prepare: `SELECT pg_create_logical_replication_slot('bridge', 'test_decoding')`,
		opts:    cdc.SetupOptions{CreatePublication: true, CreateSlot: true},
		problem: []string{`replication slot "bridge" uses the output plugin "test_decoding", not pgoutput: choose another slot name`},
	}, {
		name:    "physical slot",
		prepare: `SELECT pg_create_physical_replication_slot('bridge')`,
		opts:    cdc.SetupOptions{CreatePublication: true, CreateSlot: true},
		problem: []string{`replication slot "bridge" is a physical slot, not a logical one: choose another slot name`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t, pg, setupSchema)
			dropSlotOnCleanup(t, pg, db, "bridge")
			if tt.prepare != "" {
				exec(t, pg, db, tt.prepare)
			}
			o := tt.opts
			o.Publication, o.Slot, o.Tables = "bridge", "bridge", setupTables
			res, err := cdc.Setup(context.Background(), connect(t, pg, db), replConn(t, pg, db), o)
			var problems []string
			if err != nil {
				var se *cdc.SetupError
				if !errors.As(err, &se) {
					t.Fatalf("Setup: %v (not a *SetupError)", err)
				}
				problems = se.Problems
			}
			if diff := cmp.Diff(tt.problem, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.notes, res.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
			if err != nil {
				// Nothing is created when something needs a DBA.
				if res.PublicationCreated || res.SlotCreated {
					t.Errorf("Setup failed but created something: %+v", res)
				}
			} else if !res.SlotCreated || res.ConfirmedLSN == 0 {
				t.Errorf("Setup did not create the slot: %+v", res)
			}
		})
	}
}

func TestSetupCreatesThenReuses(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, pg, setupSchema)
	dropSlotOnCleanup(t, pg, db, "bridge")
	conn := connect(t, pg, db)
	o := cdc.SetupOptions{Publication: "bridge", Slot: "bridge", Tables: setupTables, CreatePublication: true, CreateSlot: true}

	first, err := cdc.Setup(ctx, conn, replConn(t, pg, db), o)
	if err != nil {
		t.Fatal(err)
	}
	if !first.PublicationCreated || !first.SlotCreated || first.ConfirmedLSN == 0 {
		t.Fatalf("first Setup = %+v, want publication and slot created", first)
	}
	var tables []string
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_publication_tables WHERE pubname = 'bridge' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, s)
	}
	if diff := cmp.Diff([]string{`"Odd"."c d"`, "public.a", "public.b"}, tables); diff != "" {
		t.Errorf("published tables (-want +got):\n%s", diff)
	}
	var plugin, typ string
	if err := conn.QueryRow(ctx, `SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = 'bridge'`).Scan(&plugin, &typ); err != nil {
		t.Fatal(err)
	}
	if plugin != "pgoutput" || typ != "logical" {
		t.Errorf("slot is %s/%s, want logical/pgoutput", typ, plugin)
	}

	second, err := cdc.Setup(ctx, conn, nil, cdc.SetupOptions{Publication: "bridge", Slot: "bridge", Tables: setupTables})
	if err != nil {
		t.Fatal(err)
	}
	want := cdc.SetupResult{ConfirmedLSN: first.ConfirmedLSN}
	if diff := cmp.Diff(want, second); diff != "" {
		t.Errorf("second Setup (-want +got):\n%s", diff)
	}
}

func TestSetupNeedsLogicalWAL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{Settings: map[string]string{"wal_level": "replica"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	_, err = cdc.Setup(ctx, connect(t, p, "postgres"), nil, cdc.SetupOptions{
		Publication: "bridge", Slot: "bridge", Tables: []cdc.TableName{public("a")},
	})
	want := `wal_level is "replica", logical decoding needs "logical": run ALTER SYSTEM SET wal_level = logical; (or set it in postgresql.conf) and restart PostgreSQL; a reload is not enough`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Setup error = %v, want it to contain %q", err, want)
	}
}

// TestSetupChecksPrivileges connects as a role that lacks what the bridge
// needs: every missing privilege is reported with the GRANT that fixes it,
// before anything is created.
func TestSetupChecksPrivileges(t *testing.T) {
	db := newDB(t, pg, setupSchema+`
		DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'weak') THEN CREATE ROLE weak LOGIN; END IF;
		END $$;
		GRANT SELECT ON a TO weak;`)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.Replace(pg.DSN(db), "postgres@", "weak@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = cdc.Setup(ctx, conn, nil, cdc.SetupOptions{
		Publication: "bridge", Slot: "bridge", Tables: setupTables,
		CreatePublication: true, CreateSlot: true, DryRun: true,
	})
	var se *cdc.SetupError
	if !errors.As(err, &se) {
		t.Fatalf("Setup = %v, want a *SetupError", err)
	}
	want := []string{
		`role "weak" may not open replication connections: run ALTER ROLE "weak" REPLICATION;`,
		`role "weak" cannot SELECT from "public"."b", which the bridge needs to read rows back: run GRANT SELECT ON "public"."b" TO "weak";`,
		`role "weak" has no USAGE on schema "Odd": run GRANT USAGE ON SCHEMA "Odd" TO "weak";`,
	}
	if diff := cmp.Diff(want, se.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}
