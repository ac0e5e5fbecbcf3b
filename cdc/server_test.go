package cdc_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/testenv"
)

// pg is the cluster shared by the tests of this package that do not stop
// the server. Each test works in its own database with its own slot.
var pg *testenv.Postgres

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	p, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pg = p
	code := m.Run()
	if err := p.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

var dbSeq atomic.Int64

// newDB creates a database for one test and returns its name.
func newDB(t *testing.T, p *testenv.Postgres, sql string) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("cdc_%s_%d", strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())), dbSeq.Add(1))
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	if err := p.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	if sql != "" {
		exec(t, p, name, sql)
	}
	return name
}

func exec(t *testing.T, p *testenv.Postgres, db, sql string) {
	t.Helper()
	if err := p.Exec(context.Background(), db, sql); err != nil {
		t.Fatal(err)
	}
}

func connect(t *testing.T, p *testenv.Postgres, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), p.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func replConn(t *testing.T, p *testenv.Postgres, db string) *pgconn.PgConn {
	t.Helper()
	conn, err := pgconn.Connect(context.Background(), p.DSN(db)+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// dropSlotOnCleanup drops the slot when the test ends: a leaked slot pins
// WAL. Cleanups run last-registered first, so register this before
// starting anything that holds the slot.
func dropSlotOnCleanup(t *testing.T, p *testenv.Postgres, db, slot string) {
	t.Cleanup(func() {
		ctx := context.Background()
		err := testenv.Eventually(ctx, 20*time.Second, func(ctx context.Context) (bool, string, error) {
			err := p.Exec(ctx, db, fmt.Sprintf(
				`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '%[1]s' AND active_pid IS NOT NULL;
				 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%[1]s'`, slot))
			if err != nil {
				return false, err.Error(), nil
			}
			return true, "", nil
		})
		if err != nil {
			t.Errorf("drop slot %s: %v", slot, err)
		}
	})
}

// setup creates the publication and slot for tables and returns the slot's
// starting LSN.
func setup(t *testing.T, p *testenv.Postgres, db string, tables ...cdc.TableName) pglogrepl.LSN {
	t.Helper()
	dropSlotOnCleanup(t, p, db, "bridge")
	res, err := cdc.Setup(context.Background(), connect(t, p, db), replConn(t, p, db), cdc.SetupOptions{
		Publication: "bridge", Slot: "bridge", Tables: tables,
		CreatePublication: true, CreateSlot: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.ConfirmedLSN
}

func slotLSN(ctx context.Context, p *testenv.Postgres, db, slot string) (pglogrepl.LSN, error) {
	conn, err := pgx.Connect(ctx, p.DSN(db))
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var s string
	err = conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s)
	if err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(s)
}

var public = func(name string) cdc.TableName { return cdc.TableName{Schema: "public", Name: name} }

// newRowReader returns a RowReader on a pool set up as the bridge sets up
// its own; the pool closes with the test.
func newRowReader(t *testing.T, p *testenv.Postgres, db string) *cdc.RowReader {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(p.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	cdc.SetTextFormat(cfg.ConnConfig.RuntimeParams)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return cdc.NewRowReader(pool)
}
