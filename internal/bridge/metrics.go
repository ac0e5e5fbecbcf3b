package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/statefeed/statefeed/pipeline"
	"github.com/statefeed/statefeed/snapshot"
)

// serveMetrics serves GET /metrics (Prometheus text format) and GET
// /healthz on ln until ctx ends. stats is called on every request.
func serveMetrics(ctx context.Context, ln net.Listener, stats func() pipeline.Stats, jobs func() []*snapshot.Job, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, stats(), jobs())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !stats().Streaming {
			http.Error(w, "not streaming: the replication connection is down or being re-established", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "streaming\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics server stopped", "err", err)
	}
}

// writeMetrics writes s in the Prometheus text exposition format. The
// names follow statefeed_<thing>_<unit>; no label carries a key or a value.
func writeMetrics(w io.Writer, s pipeline.Stats, jobs []*snapshot.Job) {
	metric := func(name, typ, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	metric("statefeed_records_published_total", "counter", "Records Kafka acknowledged.", s.RecordsPublished)
	metric("statefeed_transactions_confirmed_total", "counter", "Source transactions confirmed to the replication slot.", s.TransactionsConfirmed)
	metric("statefeed_confirmed_lsn_bytes", "gauge", "The WAL position last confirmed to the replication slot, as a byte offset.", uint64(s.ConfirmedLSN))
	metric("statefeed_source_reconnects_total", "counter", "Replication sessions started again after a lost connection.", s.Reconnects)
	streaming := 0
	if s.Streaming {
		streaming = 1
	}
	metric("statefeed_streaming", "gauge", "1 while a replication session is running.", streaming)
	var running, rows, tombstones int64
	for _, j := range jobs {
		if j.State == snapshot.Running {
			running++
		}
		rows += j.Rows
		tombstones += j.Tombstones
	}
	metric("statefeed_backfills_running", "gauge", "Backfill jobs (initial snapshot, requested, truncate, recover) not finished.", running)
	metric("statefeed_backfill_records_total", "counter", "Records the backfill jobs known to this process published from chunks, as recorded in the progress topic.", rows)
	metric("statefeed_backfill_tombstones_total", "counter", "Tombstones the reconciles of the backfill jobs known to this process published.", tombstones)
}
