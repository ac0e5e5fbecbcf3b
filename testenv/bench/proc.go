package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// drain is where the time and the CPU of one drain of a WAL range went:
// the reading client (the bridge or pg_recvlogical), the walsender that
// decoded for it, and, for the bridge, the broker, which runs in this
// process.
type drain struct {
	wall      time.Duration
	client    time.Duration
	walsender time.Duration
	broker    time.Duration
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, which
// Linux fixes at 100 on every architecture Go supports.
const userHZ = 100

// procCPU returns the user + system time a process has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// peakRSS returns a process's peak resident set size (VmHWM): the high
// water mark of its own memory since it was exec'd. (The rusage of a child
// is no use here: Linux carries the parent's high water mark over the fork
// into the child's maxrss.)
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmHWM: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
}

// selfCPU returns the user + system time this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// walsender samples the CPU time of the walsender serving a slot while it
// runs: it has exited by the time its client has, so the last sample, at
// most an interval old, stands for its total.
type walsender struct {
	stop chan struct{}
	done chan struct{}

	mu  sync.Mutex
	cpu time.Duration
	err error
}

// watchWalsender starts sampling the walsender of slot, on a connection
// of its own.
func (e *env) watchWalsender(ctx context.Context, slot string) *walsender {
	w := &walsender{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		conn, err := e.connect(ctx)
		if err != nil {
			w.setErr(err)
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		pid := 0
		for {
			if pid == 0 {
				var active *int
				if err := conn.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active); err != nil {
					w.setErr(fmt.Errorf("find the walsender of slot %s: %w", slot, err))
					return
				}
				if active != nil {
					pid = *active
				}
			}
			if pid != 0 {
				if cpu, err := procCPU(pid); err == nil {
					w.mu.Lock()
					w.cpu = cpu
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *walsender) setErr(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// total stops sampling and returns the last sample.
func (w *walsender) total() (time.Duration, error) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cpu, w.err
}
