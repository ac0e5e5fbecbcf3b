// Command bridge streams a PostgreSQL database's changes into compacted
// Kafka topics, one full entity state per business key.
//
// Usage:
//
//	bridge run      --config FILE [--recover-slot]   stream until SIGINT or SIGTERM
//	                [--cpuprofile FILE] [--memprofile FILE]
//	bridge check    --config FILE                    validate the configuration and the mappings against the database, then exit
//	bridge backfill --config FILE --entity NAME ...  ask the running bridge to backfill entities and follow it
//	bridge version
//
// Exit codes: 0 after a clean stop, 1 when the bridge stopped on an error,
// 2 for a problem to fix first: usage, configuration, mappings, database
// setup or topics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/statefeed/statefeed/internal/bridge"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `bridge streams PostgreSQL changes into compacted Kafka state feeds.

Usage:
  bridge run      --config FILE   stream until SIGINT or SIGTERM
      --recover-slot              recreate a missing or lost slot whose topics
                                  hold data, and rebuild them from the tables
      --cpuprofile FILE           write pprof CPU and allocation profiles of
      --memprofile FILE           the run when it ends
  bridge check    --config FILE   check the configuration, the mappings and the
                                  database setup, create nothing, then exit
  bridge backfill --config FILE --entity NAME [--entity NAME ...]
                                  ask the bridge to re-read entities' tables into
                                  their topics while it streams, and follow it
      --reconcile=false           do not tombstone keys the tables no longer hold
      --no-wait                   return once the request is written
  bridge backfill --config FILE --cancel JOB
                                  cancel a backfill; what it published stays
  bridge backfill --config FILE   follow the running backfills (the initial snapshot)
  bridge version

Exit codes: 0 clean stop, 1 stopped on an error, 2 a problem to fix first
(usage, configuration, mappings, database setup or topics).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// isTerminal reports whether w is a terminal, where progress is redrawn
// in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "--version":
		fmt.Fprintln(stdout, "bridge", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "run", "check", "backfill":
	default:
		fmt.Fprintf(stderr, "bridge: unknown command %q\n\n%s", cmd, usage)
		return 2
	}

	fs := flag.NewFlagSet("bridge "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "configuration `file` (YAML; see config.example.yaml)")
	var entities []string
	var recoverSlot, reconcile, noWait bool
	var cpuProfile, memProfile string
	var cancelJob string
	switch cmd {
	case "run":
		fs.BoolVar(&recoverSlot, "recover-slot", false, "recreate a missing or lost slot whose topics hold data and rebuild the topics from the tables")
		fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to `file` (go tool pprof reads it)")
		fs.StringVar(&memProfile, "memprofile", "", "write an allocation profile to `file` when the run ends")
	case "backfill":
		fs.Func("entity", "an entity to backfill (repeat for several)", func(s string) error {
			entities = append(entities, s)
			return nil
		})
		fs.BoolVar(&reconcile, "reconcile", true, "also tombstone the keys whose rows are gone or outside the filter")
		fs.BoolVar(&noWait, "no-wait", false, "return once the request is written")
		fs.StringVar(&cancelJob, "cancel", "", "cancel the backfill `job` with this ID (as bridge backfill prints it)")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *configFile == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bridge %s: --config FILE is required and takes no other arguments\n", cmd)
		return 2
	}
	cfg, err := bridge.LoadConfig(*configFile, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := bridge.NewLogger(stderr, cfg.Log)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, the default handling comes back: a second
	// one ends the process at once. That is safe: whatever Kafka had not
	// acknowledged is not confirmed, and is read again on the next start.
	context.AfterFunc(ctx, func() {
		stop()
		if cmd == "run" {
			log.Info("stopping: flushing what is in flight; signal again to quit at once")
		}
	})

	switch cmd {
	case "check":
		err = bridge.Check(ctx, cfg, stdout)
	case "backfill":
		err = bridge.Backfill(ctx, cfg, bridge.BackfillOptions{
			Entities: entities, Reconcile: reconcile, Cancel: cancelJob, NoWait: noWait, TTY: isTerminal(stdout),
		}, stdout)
	default:
		stopProfiles, perr := startProfiles(cpuProfile, memProfile)
		if perr != nil {
			fmt.Fprintf(stderr, "bridge run: %v\n", perr)
			return 2
		}
		log.Info("starting bridge", "version", version, "slot", cfg.Source.Slot, "publication", cfg.Source.Publication)
		err = bridge.Run(ctx, cfg, log, bridge.RunOptions{RecoverSlot: recoverSlot})
		if perr := stopProfiles(); perr != nil {
			fmt.Fprintf(stderr, "bridge run: %v\n", perr)
		}
	}
	if err != nil {
		// Printed as is, not through the log handler: problems span several
		// lines, each file:line: path: what to do.
		var cfgErr *bridge.ConfigError
		if errors.As(err, &cfgErr) {
			// One problem a line, each already saying where and what to do.
			fmt.Fprintln(stderr, err)
			return 2
		}
		fmt.Fprintf(stderr, "bridge %s: %v\n", cmd, err)
		return 1
	}
	if cmd == "run" {
		log.Info("bridge stopped cleanly")
	}
	return 0
}

// startProfiles starts a CPU profile into cpuFile and returns a function
// that stops it and writes an allocation profile into memFile. An empty
// name skips that profile.
func startProfiles(cpuFile, memFile string) (stop func() error, err error) {
	var cpu *os.File
	if cpuFile != "" {
		if cpu, err = os.Create(cpuFile); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	return func() error {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				errs = append(errs, fmt.Errorf("--cpuprofile: %w", err))
			}
		}
		if memFile != "" {
			runtime.GC() // settle the heap statistics of the last cycle
			if err := writeProfile("allocs", memFile); err != nil {
				errs = append(errs, fmt.Errorf("--memprofile: %w", err))
			}
		}
		return errors.Join(errs...)
	}, nil
}

func writeProfile(name, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
