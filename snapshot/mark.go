package snapshot

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Prefix is the prefix of the logical decoding messages the bridge writes
// into the WAL with pg_logical_emit_message: the watermarks of backfill
// chunks and reconcile passes, and backfill requests.
const Prefix = "statefeed"

// Kinds of marks.
const (
	kindLow     = "low"
	kindHigh    = "high"
	kindRequest = "request"
	kindCancel  = "cancel"
)

// mark is the content of a message. Slot names the bridge it is for: every
// slot of the database decodes every message.
type mark struct {
	Slot   string `json:"slot"`
	Kind   string `json:"kind"`
	Run    string `json:"run,omitempty"`    // the bridge process that wrote a watermark
	Window uint64 `json:"window,omitempty"` // the chunk or pass a watermark brackets

	Request *Request `json:"request,omitempty"`
}

// Request asks the bridge streaming from Slot for a backfill; in a cancel,
// ID is the job's.
type Request struct {
	ID        string   `json:"id"`
	Entities  []string `json:"entities"`
	Reconcile bool     `json:"reconcile"`
}

// Execer runs a statement: *pgx.Conn, *pgxpool.Pool and *pgxpool.Conn have it.
type Execer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// emit writes m into the WAL as a transactional message, in a transaction
// of its own, and returns the LSN pg_logical_emit_message reports.
func emit(ctx context.Context, db Execer, m mark) (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	var lsn string
	if err := db.QueryRow(ctx, "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2::text)::text", Prefix, string(b)).Scan(&lsn); err != nil {
		return "", fmt.Errorf("write %s watermark into the WAL: %w", m.Kind, err)
	}
	return lsn, nil
}

// RequestBackfill writes a backfill request for the bridge streaming from
// slot into the WAL. That bridge picks it up when its stream reaches it,
// now if it is running, or when it next starts.
func RequestBackfill(ctx context.Context, db Execer, slot string, r Request) error {
	_, err := emit(ctx, db, mark{Slot: slot, Kind: kindRequest, Request: &r})
	return err
}

// CancelBackfill writes into the WAL a request to cancel the job id of the
// bridge streaming from slot. The job ends as failed; what it published
// stays.
func CancelBackfill(ctx context.Context, db Execer, slot, id string) error {
	_, err := emit(ctx, db, mark{Slot: slot, Kind: kindCancel, Request: &Request{ID: id}})
	return err
}
