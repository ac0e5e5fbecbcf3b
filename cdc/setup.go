package cdc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SetupOptions says which publication and slot the bridge uses and whether
// Setup may create them.
type SetupOptions struct {
	Publication string
	Slot        string
	// Tables are the mapped tables; the publication must publish them all.
	Tables []TableName
	// CreatePublication allows Setup to create a missing publication.
	CreatePublication bool
	// CreateSlot allows Setup to create a missing slot.
	CreateSlot bool
	// RecreateLostSlot allows Setup to drop a slot whose WAL is lost
	// (wal_status = lost) and create it again. The changes the slot lost
	// are not in the stream: the caller must rebuild the topics.
	RecreateLostSlot bool
	// DryRun checks everything and reports what would be created
	// (SetupResult.PublicationCreated, SlotCreated) without creating it.
	DryRun bool
}

// SetupResult says what Setup found and did.
type SetupResult struct {
	PublicationCreated bool // or, with DryRun, would be created
	SlotCreated        bool // or, with DryRun, would be created
	SlotLost           bool // the slot had lost WAL and was (or would be) recreated
	// ConfirmedLSN is the slot's confirmed_flush_lsn, or the consistent
	// point of a slot Setup created: streaming resumes there.
	ConfirmedLSN pglogrepl.LSN
	// Notes are findings that need no action but are worth logging, such
	// as a publication that publishes more than the mapped tables.
	Notes []string
}

// SetupError lists everything a DBA must do before the bridge can stream,
// each problem with the SQL that fixes it.
type SetupError struct {
	Problems []string
}

func (e *SetupError) Error() string {
	return "replication setup is incomplete:\n  " + strings.Join(e.Problems, "\n  ")
}

// publishedOps are the operations the bridge needs the publication to publish.
var publishedOps = []string{"insert", "update", "delete", "truncate"}

// slotName is what PostgreSQL accepts as a replication slot name.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Setup checks that the server can stream the mapped tables to the bridge
// and creates what is missing when allowed: first the publication, then
// the slot (a slot must not start decoding before its publication exists).
// It never drops or alters anything. conn is an ordinary connection to the
// database; replConn, used only to create the slot, is a connection with
// replication=database to the same database and may be nil when
// CreateSlot is false.
//
// Problems a DBA must fix are returned together as a *SetupError, and then
// nothing is created.
func Setup(ctx context.Context, conn *pgx.Conn, replConn *pgconn.PgConn, o SetupOptions) (SetupResult, error) {
	var res SetupResult
	if o.Publication == "" {
		return res, errors.New("setup: no publication name")
	}
	if !slotName.MatchString(o.Slot) {
		return res, fmt.Errorf("setup: invalid slot name %q: use 1 to 63 lower-case letters, digits and underscores", o.Slot)
	}
	if len(o.Tables) == 0 {
		return res, errors.New("setup: no tables to publish")
	}
	if o.CreateSlot && replConn == nil && !o.DryRun {
		return res, errors.New("setup: creating a slot needs a replication connection")
	}

	var walLevel string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level')").Scan(&walLevel); err != nil {
		return res, fmt.Errorf("setup: read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return res, &SetupError{Problems: []string{fmt.Sprintf(
			"wal_level is %q, logical decoding needs \"logical\": run ALTER SYSTEM SET wal_level = logical; (or set it in postgresql.conf) and restart PostgreSQL; a reload is not enough",
			walLevel)}}
	}

	grants, err := checkPrivileges(ctx, conn, o)
	if err != nil {
		return res, err
	}
	pub, err := checkPublication(ctx, conn, o)
	if err != nil {
		return res, err
	}
	slot, err := checkSlot(ctx, conn, o)
	if err != nil {
		return res, err
	}
	problems := append(grants, append(pub.problems, slot.problems...)...)
	if len(problems) > 0 {
		return res, &SetupError{Problems: problems}
	}
	res.Notes = pub.notes
	res.SlotLost = slot.lost
	if o.DryRun {
		res.PublicationCreated = pub.create
		res.SlotCreated = slot.create
		res.ConfirmedLSN = slot.confirmed
		return res, nil
	}

	if pub.create {
		if _, err := conn.Exec(ctx, createPublicationSQL(o)); err != nil {
			return res, fmt.Errorf("create publication %q: %w", o.Publication, err)
		}
		res.PublicationCreated = true
	}
	if slot.lost {
		if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_drop_replication_slot($1)", o.Slot); err != nil {
			return res, fmt.Errorf("drop lost replication slot %q: %w", o.Slot, err)
		}
	}
	if slot.create {
		// NOEXPORT_SNAPSHOT: the bridge does not read a snapshot through
		// this connection, and an exported snapshot would keep it busy.
		r, err := pglogrepl.CreateReplicationSlot(ctx, replConn, o.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			return res, fmt.Errorf("create replication slot %q: %w", o.Slot, err)
		}
		if res.ConfirmedLSN, err = pglogrepl.ParseLSN(r.ConsistentPoint); err != nil {
			return res, fmt.Errorf("create replication slot %q: consistent point: %w", o.Slot, err)
		}
		res.SlotCreated = true
	} else {
		res.ConfirmedLSN = slot.confirmed
	}
	return res, nil
}

type publicationCheck struct {
	create   bool
	problems []string
	notes    []string
}

func checkPublication(ctx context.Context, conn *pgx.Conn, o SetupOptions) (publicationCheck, error) {
	var (
		chk  publicationCheck
		all  bool
		ops  [4]bool
		name = pgx.Identifier{o.Publication}.Sanitize()
	)
	err := conn.QueryRow(ctx, `
		SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
		FROM pg_catalog.pg_publication WHERE pubname = $1`, o.Publication).
		Scan(&all, &ops[0], &ops[1], &ops[2], &ops[3])
	if errors.Is(err, pgx.ErrNoRows) {
		if o.CreatePublication {
			chk.create = true
		} else {
			chk.problems = append(chk.problems, fmt.Sprintf("publication %s does not exist: run %s;", name, createPublicationSQL(o)))
		}
		return chk, nil
	}
	if err != nil {
		return chk, fmt.Errorf("read publication %s: %w", name, err)
	}

	var missingOps []string
	for i, ok := range ops {
		if !ok {
			missingOps = append(missingOps, publishedOps[i])
		}
	}
	if len(missingOps) > 0 {
		chk.problems = append(chk.problems, fmt.Sprintf(
			"publication %s does not publish %s: run ALTER PUBLICATION %s SET (publish = '%s');",
			name, strings.Join(missingOps, ", "), name, strings.Join(publishedOps, ", ")))
	}

	// pg_publication_tables covers FOR TABLE, FOR ALL TABLES and (from
	// PostgreSQL 15) FOR TABLES IN SCHEMA. Its rowfilter column exists
	// from 15 on; reading it through to_jsonb keeps older servers working.
	rows, err := conn.Query(ctx, `
		SELECT pt.schemaname::text, pt.tablename::text, coalesce(to_jsonb(pt)->>'rowfilter', '')
		FROM pg_catalog.pg_publication_tables pt WHERE pt.pubname = $1`, o.Publication)
	if err != nil {
		return chk, fmt.Errorf("read tables of publication %s: %w", name, err)
	}
	published := make(map[TableName]string)
	for rows.Next() {
		var (
			t      TableName
			filter string
		)
		if err := rows.Scan(&t.Schema, &t.Name, &filter); err != nil {
			return chk, fmt.Errorf("read tables of publication %s: %w", name, err)
		}
		published[t] = filter
	}
	if err := rows.Err(); err != nil {
		return chk, fmt.Errorf("read tables of publication %s: %w", name, err)
	}

	var missing []string
	for _, t := range o.Tables {
		filter, ok := published[t]
		switch {
		case !ok:
			missing = append(missing, t.Quoted())
		case filter != "":
			// A row filter drops changes the mappings need, silently.
			chk.problems = append(chk.problems, fmt.Sprintf(
				"publication %s filters table %s with WHERE %s, so the bridge would miss changes: run ALTER PUBLICATION %s SET TABLE ... listing %s without a WHERE clause",
				name, t.Quoted(), filter, name, t.Quoted()))
		}
		delete(published, t)
	}
	if len(missing) > 0 {
		chk.problems = append(chk.problems, fmt.Sprintf(
			"publication %s does not publish %s: run ALTER PUBLICATION %s ADD TABLE %s;",
			name, strings.Join(missing, ", "), name, strings.Join(missing, ", ")))
	}
	switch {
	case all:
		chk.notes = append(chk.notes, fmt.Sprintf("publication %s is FOR ALL TABLES; the bridge ignores changes to unmapped tables, but the server still decodes and sends them", name))
	case len(published) > 0:
		extra := make([]string, 0, len(published))
		for t := range published {
			extra = append(extra, t.Quoted())
		}
		slices.Sort(extra)
		chk.notes = append(chk.notes, fmt.Sprintf("publication %s also publishes %s, which no mapping uses; the bridge ignores their changes", name, strings.Join(extra, ", ")))
	}
	return chk, nil
}

func createPublicationSQL(o SetupOptions) string {
	tables := make([]string, len(o.Tables))
	for i, t := range o.Tables {
		tables[i] = t.Quoted()
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = '%s')",
		pgx.Identifier{o.Publication}.Sanitize(), strings.Join(tables, ", "), strings.Join(publishedOps, ", "))
}

type slotCheck struct {
	create    bool
	lost      bool // to be dropped first
	confirmed pglogrepl.LSN
	problems  []string
}

func checkSlot(ctx context.Context, conn *pgx.Conn, o SetupOptions) (slotCheck, error) {
	var (
		chk                   slotCheck
		plugin, typ, walState *string
		database              *string
		current               string
		confirmed             *string
	)
	err := conn.QueryRow(ctx, `
		SELECT plugin::text, slot_type, database::text, current_database()::text,
			confirmed_flush_lsn::text, wal_status
		FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, o.Slot).
		Scan(&plugin, &typ, &database, &current, &confirmed, &walState)
	if errors.Is(err, pgx.ErrNoRows) {
		if o.CreateSlot {
			chk.create = true
		} else {
			chk.problems = append(chk.problems, fmt.Sprintf(
				"replication slot %q does not exist: run SELECT pg_create_logical_replication_slot('%s', 'pgoutput'); in this database",
				o.Slot, o.Slot))
		}
		return chk, nil
	}
	if err != nil {
		return chk, fmt.Errorf("read replication slot %q: %w", o.Slot, err)
	}
	switch {
	case deref(typ) != "logical":
		chk.problems = append(chk.problems, fmt.Sprintf(
			"replication slot %q is a %s slot, not a logical one: choose another slot name", o.Slot, deref(typ)))
	case deref(plugin) != "pgoutput":
		chk.problems = append(chk.problems, fmt.Sprintf(
			"replication slot %q uses the output plugin %q, not pgoutput: choose another slot name", o.Slot, deref(plugin)))
	case deref(database) != current:
		chk.problems = append(chk.problems, fmt.Sprintf(
			"replication slot %q belongs to database %q, not %q: choose another slot name", o.Slot, deref(database), current))
	case deref(walState) == "lost" && o.RecreateLostSlot && o.CreateSlot:
		chk.create, chk.lost = true, true
	case deref(walState) == "lost":
		chk.problems = append(chk.problems, fmt.Sprintf(
			"replication slot %q has lost WAL it still needed (wal_status = lost, max_slot_wal_keep_size exceeded): the changes made meanwhile were never published. Run bridge run --recover-slot to drop and recreate the slot and rebuild the topics from the tables (a full backfill with reconcile)",
			o.Slot))
	default:
		if confirmed != nil {
			if chk.confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
				return chk, fmt.Errorf("read replication slot %q: confirmed_flush_lsn: %w", o.Slot, err)
			}
		}
	}
	return chk, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkPrivileges checks what the bridge's role needs: the REPLICATION
// attribute (or superuser) for the replication connection, and USAGE on
// the schemas and SELECT on the mapped tables for reading rows back.
// Creating the publication needs ownership of the tables, which the
// CREATE PUBLICATION itself reports if it is missing.
func checkPrivileges(ctx context.Context, conn *pgx.Conn, o SetupOptions) ([]string, error) {
	var role string
	var replication bool
	if err := conn.QueryRow(ctx, `SELECT current_user, rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user`).
		Scan(&role, &replication); err != nil {
		return nil, fmt.Errorf("setup: read the role's attributes: %w", err)
	}
	var problems []string
	quotedRole := pgx.Identifier{role}.Sanitize()
	if !replication {
		problems = append(problems, fmt.Sprintf(
			"role %q may not open replication connections: run ALTER ROLE %s REPLICATION;", role, quotedRole))
	}
	schemas := map[string]bool{}
	for _, t := range o.Tables {
		if _, seen := schemas[t.Schema]; !seen {
			var usage bool
			if err := conn.QueryRow(ctx, `SELECT has_schema_privilege($1, 'USAGE')`, t.Schema).Scan(&usage); err != nil {
				return nil, fmt.Errorf("setup: check USAGE on schema %q: %w", t.Schema, err)
			}
			schemas[t.Schema] = usage
			if !usage {
				problems = append(problems, fmt.Sprintf("role %q has no USAGE on schema %s: run GRANT USAGE ON SCHEMA %s TO %s;",
					role, pgx.Identifier{t.Schema}.Sanitize(), pgx.Identifier{t.Schema}.Sanitize(), quotedRole))
			}
		}
		if !schemas[t.Schema] {
			continue
		}
		var sel bool
		if err := conn.QueryRow(ctx, `SELECT has_table_privilege($1::regclass, 'SELECT')`, t.Quoted()).Scan(&sel); err != nil {
			return nil, fmt.Errorf("setup: check SELECT on %s: %w", t.Quoted(), err)
		}
		if !sel {
			problems = append(problems, fmt.Sprintf("role %q cannot SELECT from %s, which the bridge needs to read rows back: run GRANT SELECT ON %s TO %s;",
				role, t.Quoted(), t.Quoted(), quotedRole))
		}
	}
	return problems, nil
}
