package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/statefeed/statefeed/testenv"
)

// bridgeProc is one bridge process, run with a configuration of its own.
type bridgeProc struct {
	cmd     *exec.Cmd
	metrics string // URL of its /metrics

	// streaming is when the bridge started its replication stream, as its
	// log says.
	streaming time.Time

	exited  chan struct{} // closed once the process has exited
	waitErr error         // the process's exit, set before exited closes

	mu   sync.Mutex
	tail []string // the last lines of its log, for errors
}

// usage is what the kernel accounted to a process over its whole life.
type usage struct {
	cpu     time.Duration // user + system
	peakRSS int64         // bytes (VmHWM)
}

// bridgeConfig is the bridge's configuration for one workload. The
// publication exists already; the bridge creates its topic. For a stream
// workload the slot exists too, and the bridge publishes changes only: the
// rows that existed before the slot are not part of the workload. For the
// snapshot workload the bridge creates the slot and takes the initial
// snapshot.
const bridgeConfig = `source:
  dsn: %q
  slot: %s
  publication: %s
  create_slot: %t
  create_publication: false
  status_interval: 1s
kafka:
  brokers: [%q]
  topic_defaults: {partitions: %d}
mappings: [%q]
snapshot:
  mode: %s
metrics:
  listen: %q
log:
  format: json
`

// startBridge starts the bridge on a slot and a publication that exist
// and returns once its log says that it streams. With snapshot, the slot
// must not exist: the bridge creates it and takes the initial snapshot.
func (e *env) startBridge(ctx context.Context, name, publication, slot, mappingFile string, snapshot bool) (*bridgeProc, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	config := filepath.Join(e.dir, name+".bridge.yaml")
	mode := "never"
	if snapshot {
		mode = "initial"
	}
	text := fmt.Sprintf(bridgeConfig, e.dsn, slot, publication, snapshot, e.broker.Addrs()[0], e.o.partitions, mappingFile, mode, addr)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("write the bridge's configuration: %w", err)
	}
	args := []string{"run", "--config", config}
	if e.o.profileDir != "" {
		args = append(args,
			"--cpuprofile", filepath.Join(e.o.profileDir, name+".cpu.pprof"),
			"--memprofile", filepath.Join(e.o.profileDir, name+".allocs.pprof"))
	}
	b := &bridgeProc{cmd: exec.Command(e.bridge, args...), metrics: "http://" + addr + "/metrics", exited: make(chan struct{})}
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the bridge: %w", err)
	}
	streaming := make(chan time.Time, 1)
	go b.readLog(stderr, streaming, e.o.verbose)

	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	select {
	case b.streaming = <-streaming:
		return b, nil
	case <-b.exited:
		return nil, fmt.Errorf("the bridge exited before streaming: %v\n%s", b.waitErr, b.logTail())
	case <-timeout.C:
		err = errors.New("the bridge did not start streaming within a minute")
	case <-ctx.Done():
		err = ctx.Err()
	}
	b.kill()
	return nil, fmt.Errorf("%w\n%s", err, b.logTail())
}

// readLog reads the bridge's log (JSON lines) until the process ends,
// sends the time of its "streaming started" line, then waits for the
// process.
func (b *bridgeProc) readLog(r io.Reader, streaming chan<- time.Time, verbose bool) {
	defer close(b.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if verbose {
			fmt.Fprintln(os.Stderr, line)
		}
		b.mu.Lock()
		b.tail = append(b.tail, line)
		if len(b.tail) > 30 {
			b.tail = b.tail[1:]
		}
		b.mu.Unlock()
		var entry struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "streaming started" {
			select {
			case streaming <- entry.Time:
			default: // a reconnect: the first start is the one measured
			}
		}
	}
	io.Copy(io.Discard, r)
	b.waitErr = b.cmd.Wait()
}

func (b *bridgeProc) logTail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return "bridge log:\n  " + strings.Join(b.tail, "\n  ")
}

// stallTimeout is how long waitPublished waits without a single new
// acknowledgement. The longest pause is big-txn's, while the walsender
// decodes the whole transaction before sending its first change.
const stallTimeout = 5 * time.Minute

// waitPublished polls the bridge's metrics until Kafka has acknowledged
// want records, and returns when it saw that.
func (b *bridgeProc) waitPublished(ctx context.Context, want int64) (time.Time, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last int64
	lastChange := time.Now()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-b.exited:
			return time.Time{}, fmt.Errorf("the bridge exited after %d of %d records: %v\n%s", last, want, b.waitErr, b.logTail())
		case <-tick.C:
		}
		n, err := b.published(ctx)
		now := time.Now()
		if err != nil {
			return time.Time{}, err
		}
		if n >= want {
			return now, nil
		}
		if n != last {
			last, lastChange = n, now
		} else if now.Sub(lastChange) > stallTimeout {
			return time.Time{}, fmt.Errorf("no record acknowledged for %s, %d of %d so far\n%s", stallTimeout, last, want, b.logTail())
		}
	}
}

// published reads statefeed_records_published_total from the bridge's
// metrics.
func (b *bridgeProc) published(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.metrics, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read the bridge's metrics: %w", err)
	}
	defer resp.Body.Close()
	const name = "statefeed_records_published_total "
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("the bridge's metrics lack %s", strings.TrimSpace(name))
}

// stop stops the bridge with SIGTERM, as an operator would, and returns
// what it used. A bridge that does not exit within a minute is killed.
func (b *bridgeProc) stop() (usage, error) {
	// Read before the process goes; stopping allocates next to nothing.
	rss, rssErr := peakRSS(b.cmd.Process.Pid)
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return usage{}, fmt.Errorf("stop the bridge: %w", err)
	}
	select {
	case <-b.exited:
	case <-time.After(time.Minute):
		b.kill()
		return usage{}, fmt.Errorf("the bridge did not stop within a minute of SIGTERM\n%s", b.logTail())
	}
	if b.waitErr != nil {
		return usage{}, fmt.Errorf("the bridge stopped with %v\n%s", b.waitErr, b.logTail())
	}
	if rssErr != nil {
		return usage{}, fmt.Errorf("read the bridge's peak RSS: %w", rssErr)
	}
	return usage{cpu: b.cmd.ProcessState.UserTime() + b.cmd.ProcessState.SystemTime(), peakRSS: rss}, nil
}

func (b *bridgeProc) kill() {
	b.cmd.Process.Kill()
	<-b.exited
}
