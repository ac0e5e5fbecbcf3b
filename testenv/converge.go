package testenv

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/mapping"
)

// ExpectedView applies mapping m, which must have passed Set.Check, to a
// fresh SELECT of its table: the compacted view its topic must converge
// to. Rows are read in text format, exactly as pgoutput sends values, and
// projected as inserts would be.
func ExpectedView(ctx context.Context, dsn string, m *mapping.Mapping) (map[string][]byte, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	// Values in the text format the stream uses, so that the expected view
	// is rendered from the same bytes the bridge renders.
	cdc.SetTextFormat(cfg.RuntimeParams)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	cat, err := cdc.LoadCatalog(ctx, conn, []cdc.TableName{m.Table})
	if err != nil {
		return nil, err
	}
	tbl := cat[m.Table]
	if tbl == nil {
		return nil, fmt.Errorf("table %s not found", m.Table)
	}
	rel := &cdc.Relation{Table: m.Table}
	cols := make([]string, len(tbl.Columns))
	for i, c := range tbl.Columns {
		rel.Columns = append(rel.Columns, cdc.Column{Name: c.Name, TypeOID: c.TypeOID})
		cols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	sql := fmt.Sprintf("SELECT %s FROM %s", strings.Join(cols, ", "), pgx.Identifier{m.Table.Schema, m.Table.Name}.Sanitize())
	// Text results for every column: the extended protocol with no result
	// formats asks for text.
	rr := conn.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil)
	view := map[string][]byte{}
	row := make([]cdc.Value, len(cols))
	for rr.NextRow() {
		for i, v := range rr.Values() {
			if v == nil {
				row[i] = cdc.Value{Kind: cdc.Null}
			} else {
				row[i] = cdc.Value{Kind: cdc.Text, Text: v}
			}
		}
		key, value, in, err := m.ProjectRow(rel, row)
		if err != nil {
			rr.Close()
			return nil, fmt.Errorf("project a row of %s: %w", m.Table, err)
		}
		if in {
			view[string(key)] = value
		}
	}
	if _, err := rr.Close(); err != nil {
		return nil, fmt.Errorf("read %s: %w", m.Table, err)
	}
	return view, nil
}

// Converged reports whether the compacted view of every mapping's topic
// equals the mapping applied to the source's current rows, and if not,
// why (a bounded diff). It also fails on any record with a null key.
//
// set is loaded afresh from the files the caller's set came from and
// checked against the current catalog, so the caller's set need not have
// been checked.
func Converged(ctx context.Context, dsn string, brokers []string, set *mapping.Set) (bool, string, error) {
	set, err := checkedCopy(ctx, dsn, set)
	if err != nil {
		return false, "", err
	}
	for _, m := range set.Mappings {
		want, err := ExpectedView(ctx, dsn, m)
		if err != nil {
			return false, "", err
		}
		msgs, err := ReadTopic(ctx, brokers, m.Topic)
		if err != nil {
			return false, "", err
		}
		if n := NullKeys(msgs); n > 0 {
			return false, "", fmt.Errorf("topic %s has %d records with a null key", m.Topic, n)
		}
		if diff := DiffViews(CompactedView(msgs), want); diff != "" {
			return false, fmt.Sprintf("topic %s (entity %s) differs from the source:\n%s", m.Topic, m.Entity, diff), nil
		}
	}
	return true, "", nil
}

// WaitConverged polls Converged until it holds or timeout passes.
func WaitConverged(ctx context.Context, timeout time.Duration, dsn string, brokers []string, set *mapping.Set) error {
	return Eventually(ctx, timeout, func(ctx context.Context) (bool, string, error) {
		return Converged(ctx, dsn, brokers, set)
	})
}

// checkedCopy loads set's mapping files again and checks them against the
// live catalog, without touching the caller's set.
func checkedCopy(ctx context.Context, dsn string, set *mapping.Set) (*mapping.Set, error) {
	var files []string
	for _, m := range set.Mappings {
		files = append(files, m.File)
	}
	fresh, err := mapping.Load(files)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	cat, err := cdc.LoadCatalog(ctx, conn, fresh.Tables())
	if err != nil {
		return nil, err
	}
	if err := fresh.Check(cat); err != nil {
		return nil, err
	}
	return fresh, nil
}
