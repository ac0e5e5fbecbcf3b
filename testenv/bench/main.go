// Command bench measures the bridge against the physical limits of the
// machine it runs on. It starts a throwaway PostgreSQL cluster and a
// Kafka-protocol broker (package testenv), builds the bridge from this
// repository and runs it as a separate process, and measures every
// workload together with its ceiling, in the same run, on the same data:
//
//   - stream-insert, stream-update, stream-mixed, stream-wide and big-txn
//     write a workload while no one reads it, after the replication slots
//     of both sides were created. PostgreSQL's own pg_recvlogical
//     (pgoutput, the same publication) drains its slot to /dev/null, then
//     the bridge drains its own, over exactly the same WAL range.
//   - snapshot runs the bridge's initial snapshot of a table of
//     pre-existing rows, and measures its two ceilings, COPY ... TO STDOUT
//     of the table and a raw franz-go producer writing as many records of
//     the same size to the same broker.
//   - latency holds an offered load for a while with the bridge streaming
//     and reports commit-to-Kafka percentiles.
//
// docs/benchmarks.md describes the method and holds the latest results.
// Run it from the repository: go run ./testenv/bench -h
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const help = `bench measures the bridge against the physical limits of this machine.

It starts a throwaway PostgreSQL and an embedded Kafka-protocol broker, builds
the bridge (cmd/bridge) and runs it as a separate process. Every workload is
measured together with its ceiling, in the same run, on the same data:

  stream-insert   -rows narrow rows (a bigint key, two short texts, a numeric
                  and a timestamptz) inserted, -txn-rows per transaction
  stream-update   -rows updates of those rows, -txn-rows per transaction
  stream-mixed    -rows inserts, updates and deletes, 60/30/10 in every
                  transaction of -txn-rows
  stream-wide     -wide-rows rows of about 2 KB across 20 columns of mixed
                  types inserted, -txn-rows per transaction
  big-txn         -rows narrow rows inserted in one transaction
                  ceiling of these five: pg_recvlogical (pgoutput, the same
                  publication) draining the same WAL range to /dev/null
  snapshot        the bridge's initial snapshot of -rows pre-existing rows;
                  ceiling: the slower of COPY ... TO STDOUT of the table and
                  a raw franz-go producer writing as many records of the
                  same size
  latency         each of -rates held for -latency-for with the bridge
                  streaming; p50/p95/p99 from commit to Kafka

For each: rows/s end to end, the ratio to the ceiling, the bridge's CPU
seconds per million rows and its peak RSS; for the stream workloads also
where the CPU of each drain went. docs/benchmarks.md describes the method.
Run from the repository:

  go run ./testenv/bench [flags]

Flags:
`

// options are the command's flags.
type options struct {
	rows       int
	wideRows   int
	txnRows    int
	partitions int
	repeat     int
	workloads  []string
	rates      []int
	latencyFor time.Duration
	markdown   string
	profileDir string
	bridgeBin  string
	verbose    bool
}

// workloadNames lists the workloads in the order they run.
var workloadNames = []string{"stream-insert", "stream-update", "stream-mixed", "stream-wide", "big-txn", "snapshot", "latency"}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, help)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.rows, "rows", 1_000_000, "rows of stream-insert, stream-update, stream-mixed, big-txn and snapshot")
	fs.IntVar(&o.wideRows, "wide-rows", 200_000, "rows of stream-wide")
	fs.IntVar(&o.txnRows, "txn-rows", 1000, "rows (changes) per transaction of the stream workloads except big-txn")
	fs.IntVar(&o.partitions, "partitions", 3, "partitions of every topic")
	fs.IntVar(&o.repeat, "repeat", 1, "runs of each side of a stream or snapshot workload, alternating; the fastest of each side counts")
	workloads := fs.String("workloads", strings.Join(workloadNames, ","), "comma-separated `list` of workloads to run")
	rates := fs.String("rates", "2000,10000", "comma-separated offered loads of the latency workload, in `rows/s`")
	fs.DurationVar(&o.latencyFor, "latency-for", 30*time.Second, "how long the latency workload holds each offered load")
	fs.StringVar(&o.markdown, "markdown", "", "also write the table as Markdown to `file`")
	fs.StringVar(&o.profileDir, "profile", "", "write the bridge's CPU and allocation profiles of each workload into `dir` (<workload>.cpu.pprof, <workload>.allocs.pprof; of the last drain with -repeat)")
	fs.StringVar(&o.bridgeBin, "bridge", "", "use this bridge `binary` instead of building ./cmd/bridge")
	fs.BoolVar(&o.verbose, "v", false, "copy the bridge's log to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q; see -h", fs.Args())
	}
	var problems []string
	if o.rows < 10 {
		problems = append(problems, "-rows must be at least 10")
	}
	if o.wideRows < 1 {
		problems = append(problems, "-wide-rows must be at least 1")
	}
	if o.txnRows < 10 {
		problems = append(problems, "-txn-rows must be at least 10 (a mixed transaction is 60% inserts, 30% updates, 10% deletes)")
	}
	if o.repeat < 1 {
		problems = append(problems, "-repeat must be at least 1")
	}
	if o.partitions < 1 {
		problems = append(problems, "-partitions must be at least 1")
	}
	if o.latencyFor < time.Second {
		problems = append(problems, "-latency-for must be at least 1s")
	}
	for _, w := range strings.Split(*workloads, ",") {
		w = strings.TrimSpace(w)
		if !slices.Contains(workloadNames, w) {
			problems = append(problems, fmt.Sprintf("-workloads: unknown workload %q; choose from %s", w, strings.Join(workloadNames, ", ")))
			continue
		}
		if !slices.Contains(o.workloads, w) {
			o.workloads = append(o.workloads, w)
		}
	}
	for _, r := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n < 100 {
			problems = append(problems, fmt.Sprintf("-rates: %q is not a load of at least 100 rows/s", r))
			continue
		}
		o.rates = append(o.rates, n)
	}
	if len(problems) > 0 {
		return o, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

// run measures, prints the table to stdout and, with -markdown, writes it
// as Markdown. Progress goes to log.
func run(ctx context.Context, o options, stdout, log io.Writer) error {
	results, err := measure(ctx, o, log)
	if len(results) > 0 {
		fmt.Fprintln(stdout)
		if werr := writeText(stdout, results); werr != nil {
			return errors.Join(err, werr)
		}
	}
	if err != nil {
		return err
	}
	if o.markdown == "" {
		return nil
	}
	f, err := os.Create(o.markdown)
	if err != nil {
		return fmt.Errorf("-markdown: %w", err)
	}
	if err := writeMarkdown(f, results); err != nil {
		f.Close()
		return fmt.Errorf("-markdown: %w", err)
	}
	return f.Close()
}
