package cdc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"
)

// SourceOptions configures a Source.
type SourceOptions struct {
	// ConnString is a libpq connection string or URL for the database;
	// Source adds replication=database itself.
	ConnString string
	// Slot is the logical replication slot (plugin pgoutput) to stream from.
	Slot string
	// Publication is the publication to decode.
	Publication string
	// StatusInterval is the longest time between two standby status
	// updates. Zero means 10s, the maximum: it must stay well under the
	// server's wal_sender_timeout (60s by default).
	StatusInterval time.Duration
	// Logger receives lifecycle messages; nil means slog.Default().
	Logger *slog.Logger
	// Buffer is the number of decoded changes held between the reader and
	// emit. Zero means 1024.
	Buffer int
}

const maxStatusInterval = 10 * time.Second

func (o *SourceOptions) validate() error {
	var problems []string
	if o.ConnString == "" {
		problems = append(problems, "ConnString is empty")
	}
	if !slotName.MatchString(o.Slot) {
		problems = append(problems, fmt.Sprintf("Slot %q is not a valid slot name (1 to 63 lower-case letters, digits and underscores)", o.Slot))
	}
	if o.Publication == "" {
		problems = append(problems, "Publication is empty")
	}
	if o.StatusInterval < 0 || o.StatusInterval > maxStatusInterval {
		problems = append(problems, fmt.Sprintf("StatusInterval %s is outside 0 to %s", o.StatusInterval, maxStatusInterval))
	}
	if o.Buffer < 0 {
		problems = append(problems, fmt.Sprintf("Buffer %d is negative", o.Buffer))
	}
	if len(problems) > 0 {
		return fmt.Errorf("cdc source options: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Source streams committed changes in commit order. Only Confirm advances
// the slot, except for the idle advancement described below.
//
// Run, Confirm and Close may be called from different goroutines; Run and
// Close must not overlap, and only one Run may be active at a time.
//
// Idle advancement: when every transaction Run has decoded is confirmed
// (its EndLSN ≤ the confirmed LSN) and no transaction is open, a server
// keepalive moves the confirmed LSN to the keepalive's WAL position. This
// is safe because the walsender reports the position up to which it has
// decoded and sent the WAL: every transaction that committed before it has
// already been sent, ahead of the keepalive on the same connection, and so
// has already been decoded here. It lets a slot whose publication is quiet
// follow the WAL written for other tables instead of pinning it.
//
// Server shutdown: a stopping server waits for each logical walsender's
// client to confirm everything it was sent. When Run sees the server ask
// for that, it ends the stream with a transient error rather than hold
// up the shutdown; the unconfirmed changes come again after the restart.
// While emit is blocked (Kafka unreachable) Run does not read, so it
// cannot see the request: a shutdown then waits until emit moves again
// or the bridge stops.
type Source struct {
	o   SourceOptions
	log *slog.Logger

	confirmed atomic.Uint64
	dec       *Decoder

	mu      sync.Mutex
	running bool
	conn    *pgconn.PgConn // the last session's connection, kept for Close
}

// NewSource returns a Source; it does not connect. Options are checked by Run.
func NewSource(o SourceOptions) *Source {
	if o.StatusInterval == 0 {
		o.StatusInterval = maxStatusInterval
	}
	if o.Buffer == 0 {
		o.Buffer = 1024
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Source{o: o, log: log.With("slot", o.Slot), dec: NewDecoder()}
}

// Confirm records that every change up to lsn (a Commit's Tx.EndLSN) is
// durably handled. The slot learns it with the next standby status update.
// It is safe for concurrent use; LSNs lower than the current one are ignored.
func (s *Source) Confirm(lsn pglogrepl.LSN) {
	for {
		cur := s.confirmed.Load()
		if uint64(lsn) <= cur || s.confirmed.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// serverMajor returns the major version of the server conn is connected
// to (15 for "15.4 (Debian 15.4-1)"), or 0 when it does not say.
func serverMajor(conn *pgconn.PgConn) int {
	v := conn.ParameterStatus("server_version")
	n := 0
	for _, r := range v {
		if r < '0' || r > '9' {
			break
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// Confirmed returns the confirmed LSN.
func (s *Source) Confirmed() pglogrepl.LSN { return pglogrepl.LSN(s.confirmed.Load()) }

// Run opens a fresh replication connection, starts streaming from the
// confirmed LSN (on the first Run, the slot's confirmed position) and calls
// emit for every change, in commit order, from a single goroutine. It
// blocks until streaming stops and has waited for all its goroutines.
//
// When ctx is cancelled Run stops reading and returns ctx.Err(), leaving
// the connection open so that the caller can flush what emit produced,
// Confirm it and Close. When emit returns an error, Run returns it. When
// the connection is lost Run returns an error for which IsTransient is
// true; calling Run again reconnects and resumes from the confirmed LSN,
// so changes emitted but not confirmed are emitted again.
func (s *Source) Run(ctx context.Context, emit func(context.Context, Change) error) error {
	if err := s.o.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("cdc source: Run is already running")
	}
	s.running = true
	old := s.conn
	s.conn = nil
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	if old != nil {
		// The previous session ended with an error or a cancelled context:
		// its connection is in an unknown state and is not reused.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		old.Close(closeCtx)
		cancel()
	}

	// A previous session may have ended inside a transaction; this one
	// streams it again from its Begin.
	s.dec.newSession()

	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()

	start := s.Confirmed()
	pub := strings.ReplaceAll(pgx.Identifier{s.o.Publication}.Sanitize(), "'", "''")
	args := []string{"proto_version '1'", "publication_names '" + pub + "'"}
	if serverMajor(conn) >= 14 {
		// Logical decoding messages: the watermarks of backfills and
		// requests to the bridge travel through the WAL.
		args = append(args, "messages 'true'")
	}
	err = pglogrepl.StartReplication(ctx, conn, s.o.Slot, start, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: args,
	})
	if err != nil {
		return fmt.Errorf("start replication on slot %q at %s: %w", s.o.Slot, start, err)
	}
	s.log.Info("streaming started", "lsn", start, "publication", s.o.Publication)

	out := make(chan Change, s.o.Buffer)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		st := &stream{src: s, conn: conn, out: out}
		return st.run(gctx)
	})
	g.Go(func() error {
		for {
			select {
			case c := <-out:
				if err := emit(gctx, c); err != nil {
					return err
				}
			case <-gctx.Done():
				return nil
			}
		}
	})
	err = g.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// connect opens a replication connection and reads the slot's state.
func (s *Source) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.o.ConnString)
	if err != nil {
		return nil, fmt.Errorf("cdc source: parse connection string: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	SetTextFormat(cfg.RuntimeParams)
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, readBuffer), w)
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect for replication: %w", err)
	}
	// The slot name was validated: it needs no quoting.
	res, err := conn.Exec(ctx, "SELECT confirmed_flush_lsn::text, coalesce(wal_status, '') FROM pg_catalog.pg_replication_slots WHERE slot_name = '"+s.o.Slot+"' AND slot_type = 'logical'").ReadAll()
	if err == nil && len(res) == 1 && len(res[0].Rows) == 0 {
		err = fmt.Errorf("%w; create it with SELECT pg_create_logical_replication_slot('%s', 'pgoutput');", errSlotMissing, s.o.Slot)
	}
	if err == nil && (len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 2) {
		err = errors.New("unexpected result shape")
	}
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("read replication slot %q: %w", s.o.Slot, err)
	}
	row := res[0].Rows[0]
	if string(row[1]) == "lost" {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("replication slot %q has lost WAL it still needed (wal_status = lost): the changes made meanwhile were never published; stop the bridge and run bridge run --recover-slot to recreate the slot and rebuild the topics from the tables", s.o.Slot)
	}
	if row[0] != nil {
		lsn, err := pglogrepl.ParseLSN(string(row[0]))
		if err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("read replication slot %q: confirmed_flush_lsn: %w", s.o.Slot, err)
		}
		// The slot never goes back: anything before its confirmed position
		// is confirmed, whoever confirmed it.
		s.Confirm(lsn)
	}
	return conn, nil
}

var errSlotMissing = errors.New("slot does not exist")

// readBuffer is how much of the stream one read may take from the socket.
// The driver's own buffer, 8 KB, would cost a system call every few wide
// rows.
const readBuffer = 256 << 10

// Close sends a final standby status update with the confirmed LSN, ends
// the replication stream and closes the connection of the last Run. Call
// it after Run has returned; a later Run opens a new connection.
func (s *Source) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("cdc source: Close called while Run is running; cancel Run's context and wait for it first")
	}
	conn := s.conn
	s.conn = nil
	s.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		return nil
	}
	defer conn.Close(ctx)

	lsn := s.Confirmed()
	if err := sendStatus(conn, lsn); err != nil {
		return fmt.Errorf("send final standby status on slot %q: %w", s.o.Slot, err)
	}
	// End the stream and read until the server has finished it. Closing
	// the socket with unread data would reset the connection, and the
	// server might drop the status update with it.
	conn.Conn().SetReadDeadline(time.Time{})
	conn.Frontend().Send(&pgproto3.CopyDone{})
	if err := conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("end replication on slot %q: %w", s.o.Slot, err)
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("end replication on slot %q: %w", s.o.Slot, err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("end replication on slot %q: %w", s.o.Slot, pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.ReadyForQuery:
			s.log.Info("streaming stopped", "lsn", lsn)
			return nil
		}
	}
}

func sendStatus(conn *pgconn.PgConn, lsn pglogrepl.LSN) error {
	return pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
	})
}

// stream is the reading half of one Run: it owns the connection while Run
// is active.
type stream struct {
	src  *Source
	conn *pgconn.PgConn
	out  chan<- Change

	nextStatus time.Time
	deadline   time.Time
	lastEnd    pglogrepl.LSN // EndLSN of the last decoded Commit
	buf        []byte        // current block that message copies are cut from
	lastStatus time.Time
	// quickRequests counts consecutive keepalives that asked for a reply
	// within serverWaitHint of our last status update.
	quickRequests int
}

// bufBlock is the size of the blocks that WAL messages are copied into.
// Values alias these blocks, so one allocation serves many small messages.
const bufBlock = 64 << 10

func (st *stream) run(ctx context.Context) error {
	netConn := st.conn.Conn()
	// Cancelling ctx interrupts a blocked read through the read deadline.
	// The loop below sets its own deadline and then checks ctx, so a
	// cancellation that lands between the two is still seen.
	stop := context.AfterFunc(ctx, func() { netConn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	for {
		if !time.Now().Before(st.nextStatus) {
			if err := st.status(); err != nil {
				return err
			}
		}
		if !st.deadline.Equal(st.nextStatus) {
			st.deadline = st.nextStatus
			netConn.SetReadDeadline(st.deadline)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		msg, err := st.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isTimeout(err) {
				continue
			}
			return fmt.Errorf("receive on slot %q: %w", st.src.o.Slot, err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := st.copyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication on slot %q: %w", st.src.o.Slot, pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return fmt.Errorf("replication on slot %q: %w", st.src.o.Slot, errStreamEnded)
		}
	}
}

var (
	errStreamEnded   = errors.New("server ended the replication stream")
	errServerWaiting = errors.New("server is waiting for unconfirmed changes, probably to shut down; the stream ends so that it can, and unconfirmed changes come again")
)

// serverWaitHint is how soon after a status update a second request for
// one means the server is waiting for confirmation rather than checking
// that the client is alive. A walsender checks liveness only after
// wal_sender_timeout/2 without a reply, so this misreads only a server
// with wal_sender_timeout under 2s.
const serverWaitHint = time.Second

func (st *stream) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return errors.New("empty replication message")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("keepalive on slot %q: %w", st.src.o.Slot, err)
		}
		confirmed := st.src.Confirmed()
		if !st.src.dec.InTransaction() && st.lastEnd <= confirmed && k.ServerWALEnd > confirmed {
			// Idle advancement; see Source for why this is safe.
			st.src.Confirm(k.ServerWALEnd)
			st.src.log.Debug("idle slot advanced", "lsn", k.ServerWALEnd)
			return st.status()
		}
		if k.ReplyRequested {
			if time.Since(st.lastStatus) >= serverWaitHint || k.ServerWALEnd <= confirmed {
				st.quickRequests = 0
			} else if st.quickRequests++; st.quickRequests >= 3 {
				// The server asks again and again right after our
				// answer: it is waiting for us to confirm what it sent,
				// which a walsender does when the server shuts down.
				// (Three in a row, so that one stale request read late
				// from the socket does not count.) Holding the
				// connection would hold up the shutdown until emit
				// catches up, so end the stream; unconfirmed changes
				// come again on the next Run.
				closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				st.conn.Close(closeCtx)
				cancel()
				return fmt.Errorf("replication on slot %q: confirmed %s, server at %s: %w", st.src.o.Slot, confirmed, k.ServerWALEnd, errServerWaiting)
			}
			return st.status()
		}
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("xlog data on slot %q: %w", st.src.o.Slot, err)
		}
		// The connection reuses its read buffer; values alias this copy.
		c, ok, err := st.src.dec.Decode(x.WALStart, st.copy(x.WALData))
		if err != nil {
			return fmt.Errorf("slot %q: %w", st.src.o.Slot, err)
		}
		if !ok {
			return nil
		}
		if c.Op == Commit {
			st.lastEnd = c.Tx.EndLSN
		}
		return st.deliver(ctx, c)
	}
	return nil
}

func (st *stream) copy(b []byte) []byte {
	if len(b) > bufBlock/4 {
		return append([]byte(nil), b...)
	}
	if cap(st.buf)-len(st.buf) < len(b) {
		st.buf = make([]byte, 0, bufBlock)
	}
	start := len(st.buf)
	st.buf = append(st.buf, b...)
	return st.buf[start:len(st.buf):len(st.buf)]
}

// deliver hands c to emit's goroutine. While the buffer is full it keeps
// sending standby status updates on schedule: the server counts them as
// signs of life even though nothing is read meanwhile, so a stalled emit
// (Kafka down) does not trip wal_sender_timeout.
func (st *stream) deliver(ctx context.Context, c Change) error {
	select {
	case st.out <- c:
		return nil
	default:
	}
	for {
		wait := time.Until(st.nextStatus)
		if wait <= 0 {
			if err := st.status(); err != nil {
				return err
			}
			continue
		}
		t := time.NewTimer(wait)
		select {
		case st.out <- c:
			t.Stop()
			return nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

func (st *stream) status() error {
	if err := sendStatus(st.conn, st.src.Confirmed()); err != nil {
		return fmt.Errorf("send standby status on slot %q: %w", st.src.o.Slot, err)
	}
	st.lastStatus = time.Now()
	st.nextStatus = st.lastStatus.Add(st.src.o.StatusInterval)
	return nil
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// IsTransient reports whether err is worth retrying by calling Run again:
// the connection was lost or the server was briefly unavailable. Errors
// that need a person (missing slot, authentication, permissions, bad
// input in the stream) and context errors are not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", // admin_shutdown: the server is stopping or an administrator ended the session
			"57P02", // crash_shutdown: another backend crashed; the server restarts
			"57P03", // cannot_connect_now: the server is starting up or shutting down
			"53300", // too_many_connections, also max_wal_senders reached
			"55006": // object_in_use: the slot is still held by the walsender of a dropped connection, which exits after wal_sender_timeout
			return true
		}
		// Class 08: connection exceptions.
		return strings.HasPrefix(pgErr.Code, "08")
	}
	if errors.Is(err, errStreamEnded) || errors.Is(err, errServerWaiting) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) {
		return true
	}
	// Anything else from the network (dial failures, timeouts, resets
	// wrapped in other types) is a lost or unreachable server.
	var netErr net.Error
	return errors.As(err, &netErr)
}
