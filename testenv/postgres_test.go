package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestPostgres(t *testing.T) {
	pg := NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("wal_level", func(t *testing.T) {
		var level string
		queryRow(ctx, t, pg.DSN("postgres"), "SHOW wal_level", &level)
		if level != "logical" {
			t.Errorf("wal_level = %q, want logical", level)
		}
	})

	t.Run("logical slot", func(t *testing.T) {
		if err := pg.CreateDatabase(ctx, "slots"); err != nil {
			t.Fatal(err)
		}
		if err := pg.Exec(ctx, "slots", "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t"); err != nil {
			t.Fatal(err)
		}
		// Not in the same Exec: a slot cannot be created in a transaction
		// that has written.
		if err := pg.Exec(ctx, "slots", "SELECT pg_create_logical_replication_slot('s', 'pgoutput')"); err != nil {
			t.Fatal(err)
		}
		var plugin, database string
		queryRow(ctx, t, pg.DSN("slots"), "SELECT plugin, database FROM pg_replication_slots WHERE slot_name = 's'", &plugin, &database)
		if plugin != "pgoutput" || database != "slots" {
			t.Errorf("slot s: plugin %q database %q, want pgoutput on slots", plugin, database)
		}
		if err := pg.Exec(ctx, "slots", "SELECT pg_drop_replication_slot('s')"); err != nil {
			t.Fatal(err)
		}
		var n int
		queryRow(ctx, t, pg.DSN("slots"), "SELECT count(*) FROM pg_replication_slots", &n)
		if n != 0 {
			t.Errorf("%d slots left after dropping s", n)
		}
	})

	t.Run("replication connection", func(t *testing.T) {
		conn, err := pgconn.Connect(ctx, pg.DSN("postgres")+"&replication=database")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		res := conn.Exec(ctx, "IDENTIFY_SYSTEM")
		if _, err := res.ReadAll(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("exec error keeps PgError", func(t *testing.T) {
		err := pg.Exec(ctx, "postgres", "SELECT * FROM no_such_table")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
			t.Errorf("Exec error = %v, want a *pgconn.PgError with code 42P01", err)
		}
	})
}

func TestPostgresRestart(t *testing.T) {
	pg := NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := pg.Port()

	if err := pg.Exec(ctx, "postgres", "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2)"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, pg.DSN("postgres")); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if pg.Port() != port {
		t.Errorf("port changed across restart: %d, then %d", port, pg.Port())
	}
	var n int
	queryRow(ctx, t, pg.DSN("postgres"), "SELECT count(*) FROM kept", &n)
	if n != 2 {
		t.Errorf("after Stop and Start: %d rows, want 2", n)
	}

	// With the default synchronous_commit=off, a commit sits in the WAL
	// buffers (shared memory) for up to wal_writer_delay, and a kill loses
	// it; a synchronous commit is in the page cache, which survives a
	// process crash even with fsync=off.
	if err := pg.Exec(ctx, "postgres", "SET synchronous_commit = on; INSERT INTO kept VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pg.Kill()
	t.Logf("Kill took %v", time.Since(start))
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	queryRow(ctx, t, pg.DSN("postgres"), "SELECT count(*) FROM kept", &n)
	if n != 3 {
		t.Errorf("after Kill and Start: %d rows, want 3", n)
	}

	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := pg.Start(ctx); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// queryRow runs a one-row query on a fresh connection and scans it.
func queryRow(ctx context.Context, t *testing.T, dsn, sql string, dest ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
