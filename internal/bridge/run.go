package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statefeed/statefeed/cdc"
	"github.com/statefeed/statefeed/mapping"
	"github.com/statefeed/statefeed/pipeline"
	"github.com/statefeed/statefeed/publish"
	"github.com/statefeed/statefeed/snapshot"
)

// ConfigError is a problem the operator fixes in the configuration, the
// mappings or the database setup before the bridge can start.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// prepared is what start-up found and built before streaming.
type prepared struct {
	set     *mapping.Set
	catalog cdc.Catalog
	topics  []string
}

// prepare connects to the source, loads the mappings and checks them
// against the live catalog. The caller closes conn.
func prepare(ctx context.Context, cfg *Config) (conn *pgx.Conn, p *prepared, err error) {
	set, err := mapping.Load(cfg.Mappings)
	if err != nil {
		return nil, nil, &ConfigError{err}
	}
	if conn, err = pgx.Connect(ctx, cfg.Source.DSN); err != nil {
		return nil, nil, fmt.Errorf("connect to source: %w", err)
	}
	if p, err = check(ctx, set, conn); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, nil, err
	}
	return conn, p, nil
}

func check(ctx context.Context, set *mapping.Set, conn *pgx.Conn) (*prepared, error) {
	cat, err := cdc.LoadCatalog(ctx, conn, set.Tables())
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	if err := set.Check(cat); err != nil {
		return nil, &ConfigError{err}
	}
	var topics []string
	for _, m := range set.Mappings {
		topics = append(topics, m.Topic)
	}
	return &prepared{set: set, catalog: cat, topics: topics}, nil
}

// RunOptions are the choices of bridge run beyond its configuration.
type RunOptions struct {
	// RecoverSlot lets the bridge recreate a slot that is missing or has
	// lost WAL while its topics hold data, and rebuild the topics with a
	// full backfill and reconcile. Without it the bridge refuses to start
	// then: changes were lost and a silent restart would hide it.
	RecoverSlot bool
}

// Run checks the mappings, prepares the publication, the slot and the
// topics, and streams until ctx ends (nil) or a permanent error stops it.
//
// The order spares the source: everything is checked first, then the
// topics are made ready (waiting for Kafka if need be), and only then is
// the slot created, so a bridge that cannot publish leaves no slot
// pinning WAL behind. A job for the initial snapshot is saved before the
// slot is created, so that a bridge stopped in between still takes it.
func Run(ctx context.Context, cfg *Config, log *slog.Logger, opts RunOptions) (err error) {
	defer func() {
		// Asked to stop before streaming began: a clean stop too.
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = nil
		}
	}()
	conn, p, err := prepare(ctx, cfg)
	if err != nil {
		return err
	}
	setup := setupOptions(cfg, p)
	setup.RecreateLostSlot = opts.RecoverSlot
	planned, err := cdc.Setup(ctx, conn, nil, setup)
	if err == nil {
		err = checkBackfills(ctx, cfg, p, conn, planned.SlotCreated)
	}
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return setupError(err)
	}

	producer, err := newProducer(cfg, log)
	if err != nil {
		return err
	}
	defer producer.Close()
	if err := ensureTopics(ctx, producer, append(slices.Clone(p.topics), cfg.progressTopic()), log); err != nil {
		return err
	}
	store := snapshot.KafkaStore{Kafka: producer, Topic: cfg.progressTopic()}
	if planned.SlotCreated {
		if err := planSnapshot(ctx, cfg, p, producer, store, planned.SlotLost, opts.RecoverSlot, log); err != nil {
			return err
		}
	} else if opts.RecoverSlot {
		log.Info("--recover-slot: the slot is healthy; nothing to recover", "slot", cfg.Source.Slot)
	}

	setup.DryRun = false
	res, err := setupReplication(ctx, cfg.Source.DSN, setup)
	if err != nil {
		return err
	}
	if res.PublicationCreated {
		log.Info("created publication", "publication", cfg.Source.Publication, "tables", len(p.set.Tables()))
	}
	if res.SlotCreated {
		log.Info("created replication slot", "slot", cfg.Source.Slot, "lsn", res.ConfirmedLSN)
	}
	for _, n := range res.Notes {
		log.Info(n)
	}

	pool, err := newPool(ctx, cfg.Source.DSN, 2, nil)
	if err != nil {
		return fmt.Errorf("connect to source for row reads: %w", err)
	}
	defer pool.Close()
	// Backfill reads: every chunk is one statement, and statement_timeout
	// bounds how long its transaction can stay open. A watermark's commit
	// is flushed at once even where synchronous_commit is off: the
	// walsender sends only flushed WAL, and the chunk waits for it.
	bfPool, err := newPool(ctx, cfg.Source.DSN, int32(cfg.Snapshot.Workers+1), map[string]string{
		"statement_timeout":  strconv.FormatInt(cfg.Snapshot.ChunkTimeout.Milliseconds(), 10),
		"application_name":   "statefeed-backfill",
		"synchronous_commit": "on",
	})
	if err != nil {
		return fmt.Errorf("connect to source for backfills: %w", err)
	}
	defer bfPool.Close()

	backfills := snapshot.New(snapshot.Options{
		Slot:             cfg.Source.Slot,
		Set:              p.set,
		Pool:             bfPool,
		Kafka:            producer,
		Store:            store,
		Workers:          cfg.Snapshot.Workers,
		ChunkSize:        cfg.Snapshot.ChunkSize,
		KeysPerPass:      cfg.Snapshot.ReconcileKeysPerPass,
		ProgressInterval: cfg.Log.ProgressInterval,
		Logger:           log,
	})
	jobs, err := backfills.Resume(ctx)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if j.State == snapshot.Running {
			log.Info("backfill to resume", "job", j.ID, "reason", j.Reason, "entities", strings.Join(j.Entities, ","))
		}
	}

	src := cdc.NewSource(cdc.SourceOptions{
		ConnString:     cfg.Source.DSN,
		Slot:           cfg.Source.Slot,
		Publication:    cfg.Source.Publication,
		StatusInterval: cfg.Source.StatusInterval,
		Logger:         log,
	})
	pl := pipeline.New(pipeline.Options{
		Source:           src,
		Projector:        mapping.NewProjector(p.set),
		Rows:             cdc.NewRowReader(pool),
		Producer:         producer,
		Backfills:        backfills,
		SourceName:       cfg.Source.Name,
		ShutdownTimeout:  cfg.ShutdownTimeout,
		ProgressInterval: cfg.Log.ProgressInterval,
		Logger:           log,
	})
	if cfg.Metrics.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return &ConfigError{fmt.Errorf("metrics.listen: %w", err)}
		}
		mctx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
		var wg sync.WaitGroup
		wg.Go(func() { serveMetrics(mctx, ln, pl.Stats, backfills.Jobs, log) })
		defer wg.Wait()
		defer stopMetrics()
		log.Info("serving metrics", "addr", ln.Addr().String())
	}
	log.Info("streaming", "slot", cfg.Source.Slot, "lsn", res.ConfirmedLSN, "entities", len(p.set.Mappings))

	// The stream and the backfills run together; a backfill that fails
	// for good stops the stream cleanly, and its error is the bridge's.
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	bfCtx, stopBackfills := context.WithCancel(ctx)
	bfErr := make(chan error, 1)
	go func() {
		err := backfills.Run(bfCtx)
		if err != nil {
			log.Error("backfill failed; stopping", "err", err)
			stopStream()
		}
		bfErr <- err
	}()
	err = pl.Run(streamCtx)
	stopBackfills()
	if e := <-bfErr; e != nil && err == nil {
		err = e
	}
	return err
}

// planSnapshot saves the job the bridge runs when it creates its slot:
// the initial snapshot, or, when the topics already hold data, the full
// backfill with reconcile that --recover-slot asks for. Without that flag
// topics with data and no slot are refused: the changes made since the
// slot went missing are lost.
func planSnapshot(ctx context.Context, cfg *Config, p *prepared, producer *publish.Producer, store snapshot.Store, lost, recover bool, log *slog.Logger) error {
	jobs, err := store.Load(ctx)
	if err != nil {
		return err
	}
	var held []string
	for _, t := range p.topics {
		ends, err := producer.EndOffsets(ctx, t)
		if err != nil {
			return err
		}
		var n int64
		for _, e := range ends {
			n += e
		}
		if n > 0 {
			held = append(held, fmt.Sprintf("%s (%d records)", t, n))
		}
	}
	state := "does not exist"
	if lost {
		state = "has lost WAL it needed (wal_status = lost)"
	}
	if !recover {
		if len(held) > 0 || lost {
			return &ConfigError{fmt.Errorf("replication slot %q %s, but the topics already hold data: %s. The changes made since the slot was lost were never published, and a new slot would hide that. "+
				"Run bridge run --recover-slot to create the slot again and rebuild every topic from the tables: a full backfill that also tombstones the keys whose rows are gone",
				cfg.Source.Slot, state, strings.Join(held, ", "))}
		}
		if cfg.Snapshot.Mode != "initial" {
			return nil
		}
		for _, j := range jobs {
			if j.Reason == snapshot.Initial && j.State == snapshot.Running {
				return nil // saved by a start that stopped before creating the slot
			}
		}
	}
	reason := snapshot.Initial
	if recover {
		reason = snapshot.Recovered
	}
	id := fmt.Sprintf("%s-%s", reason, time.Now().UTC().Format("20060102T150405.000Z"))
	j, err := snapshot.Prepare(ctx, snapshot.Options{Set: p.set, Kafka: producer, Store: store}, id, reason, nil, recover)
	if err != nil {
		return err
	}
	log.Info("planned backfill for the new slot", "job", j.ID, "reason", j.Reason, "entities", len(j.Entities), "reconcile", j.Reconcile)
	return nil
}

// checkBackfills refuses what backfills cannot do before anything is
// created: watermarks need PostgreSQL 14 (pgoutput's messages), and a
// snapshot about to be planned needs every table to have a chunk key.
func checkBackfills(ctx context.Context, cfg *Config, p *prepared, conn *pgx.Conn, newSlot bool) error {
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return fmt.Errorf("read server version: %w", err)
	}
	var tombstone []string
	for _, m := range p.set.Mappings {
		if m.OnTruncate == mapping.TruncateTombstone {
			tombstone = append(tombstone, m.File)
		}
	}
	if version < 140000 && (cfg.Snapshot.Mode == "initial" || len(tombstone) > 0) {
		return &ConfigError{fmt.Errorf("PostgreSQL %d.%d cannot carry backfill watermarks (pgoutput sends logical decoding messages from PostgreSQL 14): set snapshot.mode: never, and on_truncate: fail or ignore in %s",
			version/10000, version%10000/100, strings.Join(tombstone, ", "))}
	}
	if !newSlot || cfg.Snapshot.Mode != "initial" {
		return nil
	}
	var problems []string
	for _, m := range p.set.Mappings {
		if _, err := snapshot.ChunkKey(ctx, conn, m.Table, m.Key); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", m.File, err))
		}
	}
	if len(problems) > 0 {
		return &ConfigError{fmt.Errorf("the initial snapshot cannot read every mapped table (set snapshot.mode: never to start without it):\n  %s", strings.Join(problems, "\n  "))}
	}
	return nil
}

// newPool opens a pool with the stream's text format and extra settings.
func newPool(ctx context.Context, dsn string, conns int32, params map[string]string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("source.dsn: %w", err)}
	}
	cfg.MaxConns = conns
	cdc.SetTextFormat(cfg.ConnConfig.RuntimeParams)
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// setupOptions describes the publication and slot the configuration asks
// for, as a dry run: the caller clears DryRun to create them.
func setupOptions(cfg *Config, p *prepared) cdc.SetupOptions {
	return cdc.SetupOptions{
		Publication:       cfg.Source.Publication,
		Slot:              cfg.Source.Slot,
		Tables:            p.set.Tables(),
		CreatePublication: cfg.Source.CreatePublication,
		CreateSlot:        cfg.Source.CreateSlot,
		DryRun:            true,
	}
}

// newProducer creates the Kafka producer the configuration describes.
func newProducer(cfg *Config, log *slog.Logger) (*publish.Producer, error) {
	producer, err := publish.NewProducer(publish.Options{
		Brokers:            cfg.Kafka.Brokers,
		ClientID:           cfg.Kafka.ClientID,
		Partitions:         int32(cfg.Kafka.TopicDefaults.Partitions),
		ReplicationFactor:  int16(cfg.Kafka.TopicDefaults.ReplicationFactor),
		AllowUncompacted:   cfg.Kafka.AllowUncompactedTopics,
		Linger:             cfg.Kafka.Linger,
		MaxBufferedRecords: cfg.Kafka.MaxBufferedRecords,
		MaxMessageBytes:    int32(cfg.Kafka.MaxMessageBytes),
		Logger:             log,
	})
	if err != nil {
		return nil, &ConfigError{err}
	}
	return producer, nil
}

// setupReplication creates the publication and the slot where missing and
// allowed, on connections of its own.
func setupReplication(ctx context.Context, dsn string, o cdc.SetupOptions) (cdc.SetupResult, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return cdc.SetupResult{}, fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var repl *pgconn.PgConn
	if o.CreateSlot {
		if repl, err = replicationConn(ctx, dsn); err != nil {
			return cdc.SetupResult{}, err
		}
		defer repl.Close(context.WithoutCancel(ctx))
	}
	res, err := cdc.Setup(ctx, conn, repl, o)
	if err != nil {
		return res, setupError(err)
	}
	return res, nil
}

// setupError makes problems the DBA must fix configuration errors.
func setupError(err error) error {
	var se *cdc.SetupError
	if errors.As(err, &se) {
		return &ConfigError{err}
	}
	return err
}

// kafkaCheckTimeout bounds how long check waits for Kafka.
const kafkaCheckTimeout = 15 * time.Second

// ensureTopics creates and verifies the topics, retrying while the brokers
// cannot be reached: a bridge started before its Kafka cluster waits for it.
func ensureTopics(ctx context.Context, producer *publish.Producer, topics []string, log *slog.Logger) error {
	backoff := 500 * time.Millisecond
	for {
		err := producer.EnsureTopics(ctx, topics)
		var te *publish.TopicError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &te):
			return &ConfigError{err}
		case ctx.Err() != nil:
			return ctx.Err()
		}
		log.Warn("kafka not reachable; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// replicationConn opens a replication=database connection.
func replicationConn(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("source.dsn: %w", err)}
	}
	pc.RuntimeParams["replication"] = "database"
	c, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", err)
	}
	return c, nil
}

// Check loads the configuration's mappings, checks them against the live
// catalog and reports the replication setup without creating anything.
func Check(ctx context.Context, cfg *Config, w io.Writer) error {
	conn, p, err := prepare(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	fmt.Fprintf(w, "mappings: %d entities on %d tables, all columns, keys and expressions check out\n", len(p.set.Mappings), len(p.set.Tables()))
	res, err := cdc.Setup(ctx, conn, nil, setupOptions(cfg, p))
	var se *cdc.SetupError
	if errors.As(err, &se) {
		return &ConfigError{err}
	}
	if err != nil {
		return err
	}
	say := func(created bool, what, name string) {
		if created {
			fmt.Fprintf(w, "%s %q: missing; bridge run will create it\n", what, name)
		} else {
			fmt.Fprintf(w, "%s %q: ready\n", what, name)
		}
	}
	say(res.PublicationCreated, "publication", cfg.Source.Publication)
	say(res.SlotCreated, "replication slot", cfg.Source.Slot)
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, t := range p.set.Tables() {
		m := p.set.OfTable(t)[0]
		if cols, err := snapshot.ChunkKey(ctx, conn, t, m.Key); err != nil {
			fmt.Fprintf(w, "note: %v\n", err)
		} else {
			fmt.Fprintf(w, "table %s: backfills read it in the order of (%s)\n", t, strings.Join(cols, ", "))
		}
	}

	producer, err := newProducer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer producer.Close()
	kctx, cancel := context.WithTimeout(ctx, kafkaCheckTimeout)
	defer cancel()
	topics := append(slices.Clone(p.topics), cfg.progressTopic())
	missing, err := producer.CheckTopics(kctx, topics)
	var te *publish.TopicError
	switch {
	case errors.As(err, &te):
		return &ConfigError{err}
	case err != nil:
		return fmt.Errorf("kafka at %s: %w", strings.Join(cfg.Kafka.Brokers, ", "), err)
	}
	for _, t := range p.topics {
		say(slices.Contains(missing, t), "topic", t)
	}
	say(slices.Contains(missing, cfg.progressTopic()), "backfill progress topic", cfg.progressTopic())
	return nil
}
