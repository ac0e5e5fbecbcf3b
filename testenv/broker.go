package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// BrokerOptions configures StartBroker. The zero value is ready to use.
type BrokerOptions struct {
	// Brokers is the number of brokers in the cluster. Zero means 1.
	Brokers int

	// Partitions is the partition count of topics created without one
	// (CreateTopics with -1 partitions). Zero means 3.
	Partitions int

	// CompactEvery is how often the broker compacts topics with
	// cleanup.policy=compact (broker config log.cleaner.backoff.ms). Zero
	// means 2 seconds. Use Broker.Compact to compact at once.
	CompactEvery time.Duration

	// DataDir is where the broker persists its log, so that Restart keeps
	// the topics, records and committed offsets. Empty means a private
	// temporary directory that Close removes; a directory given here is
	// kept.
	DataDir string

	// InMemory keeps the log in memory only, which is faster for
	// benchmarks; Restart then fails. DataDir must be empty.
	InMemory bool

	// Configs are extra broker configs, such as message.max.bytes; they
	// override the ones above.
	Configs map[string]string

	// Proxied puts a Proxy in front of every broker and makes the brokers
	// advertise the proxies' addresses in metadata, so that every client
	// connection, not only the bootstrap one, goes through a proxy that
	// Broker.Proxies returns for cutting connections.
	Proxied bool
}

// Broker is a throwaway Kafka-protocol cluster (franz-go's kfake) on
// loopback ports. Automatic topic creation is off: whoever produces creates
// its topics.
//
// Compaction follows kfake's rules: it runs on topics whose
// cleanup.policy contains "compact"; it never touches the last record
// batch of a partition (the active segment); it keeps tombstones for the
// topic's delete.retention.ms (default one day); and it drops records with
// a null key, so check NullKeys before compaction can hide them.
//
// Methods are safe for concurrent use.
type Broker struct {
	opts    BrokerOptions // defaults filled in
	dataDir string
	tempDir string // ours to remove: holds dataDir unless DataDir was given

	mu      sync.Mutex
	cluster *kfake.Cluster
	addrs   []string // advertised: the brokers' or, if proxied, the proxies'
	ports   []int    // the brokers' own listening ports
	proxies []*Proxy // one per broker when proxied
	closed  bool
}

// NewBroker starts a broker with default options for one test or benchmark
// and registers its Close with t.Cleanup. It fails the test when the broker
// does not start.
func NewBroker(t testing.TB) *Broker {
	t.Helper()
	b, err := StartBroker(context.Background(), BrokerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// StartBroker starts a broker cluster on free loopback ports. The caller
// must Close it.
func StartBroker(ctx context.Context, opts BrokerOptions) (*Broker, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	switch {
	case opts.Brokers < 0:
		return nil, fmt.Errorf("BrokerOptions.Brokers is %d; want 0 (one broker) or more", opts.Brokers)
	case opts.Partitions < 0:
		return nil, fmt.Errorf("BrokerOptions.Partitions is %d; want 0 (three) or more", opts.Partitions)
	case opts.CompactEvery < 0:
		return nil, fmt.Errorf("BrokerOptions.CompactEvery is %v; want 0 (two seconds) or more", opts.CompactEvery)
	case opts.CompactEvery > 0 && opts.CompactEvery < time.Millisecond:
		return nil, fmt.Errorf("BrokerOptions.CompactEvery is %v; the broker counts in milliseconds, want at least 1ms", opts.CompactEvery)
	case opts.InMemory && opts.DataDir != "":
		return nil, errors.New("BrokerOptions: InMemory and DataDir both set; choose one")
	}
	if opts.Brokers == 0 {
		opts.Brokers = 1
	}
	if opts.Partitions == 0 {
		opts.Partitions = 3
	}
	if opts.CompactEvery == 0 {
		opts.CompactEvery = 2 * time.Second
	}

	b := &Broker{opts: opts, dataDir: opts.DataDir}
	if !opts.InMemory && b.dataDir == "" {
		dir, err := newTempDir("kafka")
		if err != nil {
			return nil, fmt.Errorf("create broker data directory: %w", err)
		}
		b.tempDir, b.dataDir = dir, filepath.Join(dir, "data")
	}

	c, err := kfake.NewCluster(b.clusterOpts(nil)...)
	if err != nil {
		b.closeProxies()
		b.removeDir()
		return nil, fmt.Errorf("start broker: %w", err)
	}
	b.cluster = c
	b.addrs = c.ListenAddrs()
	return b, nil
}

// listen is kfake's ListenFn: it records each broker's own port and, when
// proxied, starts a proxy for each new broker and makes the listener
// report the proxy's address, which kfake advertises in metadata. Brokers
// listen in order, so the i-th call of one cluster start is broker i; a
// restart reuses the proxies and ports of the first start.
func (b *Broker) listenFn() func(network, address string) (net.Listener, error) {
	i := 0
	return func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		idx := i
		i++
		if idx == len(b.ports) {
			port, err := addrPort(ln.Addr().String())
			if err != nil {
				ln.Close()
				return nil, fmt.Errorf("listen address %s: %w", ln.Addr(), err)
			}
			b.ports = append(b.ports, port)
		}
		if !b.opts.Proxied {
			return ln, nil
		}
		if idx == len(b.proxies) {
			px, err := StartProxy(context.Background(), ln.Addr().String())
			if err != nil {
				ln.Close()
				return nil, err
			}
			b.proxies = append(b.proxies, px)
		}
		px := b.proxies[idx]
		advertised, err := net.ResolveTCPAddr("tcp", px.Addr())
		if err != nil {
			ln.Close()
			return nil, err
		}
		return advertisedListener{Listener: ln, addr: advertised}, nil
	}
}

// advertisedListener reports another address than the one it listens on.
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l advertisedListener) Addr() net.Addr { return l.addr }

// clusterOpts returns kfake's options; ports nil means pick free ones.
func (b *Broker) clusterOpts(ports []int) []kfake.Opt {
	configs := map[string]string{
		"log.cleaner.backoff.ms": strconv.FormatInt(b.opts.CompactEvery.Milliseconds(), 10),
	}
	for k, v := range b.opts.Configs {
		configs[k] = v
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(b.opts.Brokers),
		kfake.DefaultNumPartitions(b.opts.Partitions),
		kfake.BrokerConfigs(configs),
		kfake.ClusterID("statefeed-testenv"),
		kfake.ListenFn(b.listenFn()),
	}
	if ports != nil {
		opts = append(opts, kfake.Ports(ports...))
	}
	if b.dataDir != "" {
		opts = append(opts, kfake.DataDir(b.dataDir))
	}
	return opts
}

// Addrs returns the brokers' host:port addresses, for kgo.SeedBrokers:
// the proxies' addresses if BrokerOptions.Proxied is set. They stay the
// same across Restart.
func (b *Broker) Addrs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.addrs...)
}

// Proxies returns the proxy in front of each broker, in broker order, if
// BrokerOptions.Proxied is set, and nil otherwise. They survive Restart.
func (b *Broker) Proxies() []*Proxy {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*Proxy(nil), b.proxies...)
}

// Cluster returns the running kfake cluster, for fault injection with its
// Control and Fault methods. It is replaced by Restart.
func (b *Broker) Cluster() *kfake.Cluster {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cluster
}

// Compact compacts every topic with cleanup.policy=compact now and returns
// when done. The last record batch of each partition stays as it is. It
// does nothing once the broker is closed.
func (b *Broker) Compact() {
	b.mu.Lock()
	defer b.mu.Unlock()
	// kfake's Compact blocks forever on a closed cluster.
	if b.closed || b.cluster == nil {
		return
	}
	b.cluster.Compact()
}

// Restart closes the cluster, which drops every client connection, and
// starts it again on the same ports from the same data directory: topics,
// configs, records and committed offsets survive. Clients reconnect by
// themselves. It fails for an InMemory broker. If ctx ends before the
// ports can be bound again, the broker stays down and Restart returns the
// error; Close still cleans up.
func (b *Broker) Restart(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return errors.New("restart broker: broker is closed")
	case b.opts.InMemory:
		return errors.New("restart broker: an InMemory broker cannot restart; leave BrokerOptions.InMemory unset")
	}
	if b.cluster != nil {
		b.cluster.Close() // persists the state to the data directory
		b.cluster = nil
	}

	// Our own listeners are closed, but another process may hold a port
	// for a moment; wait for it rather than move to another port, which
	// clients would not find.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := kfake.NewCluster(b.clusterOpts(b.ports)...)
		if err == nil {
			b.cluster = c
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("restart broker: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restart broker: ports %v still in use: %w", b.ports, ctx.Err())
		case <-tick.C:
		}
	}

	// kfake starts its compaction timer only when a topic is created or
	// deleted or a config is altered, not when it loads topics from disk.
	// Creating and deleting a scratch topic starts it, without going
	// through the network, which may be cut by a proxy.
	const scratch = "__statefeed_testenv_restart"
	if err := b.cluster.CreateTopic(scratch, 1, nil); err != nil {
		return fmt.Errorf("restart broker: resume compaction: create topic %s: %w", scratch, err)
	}
	if err := b.cluster.DeleteTopic(scratch); err != nil {
		return fmt.Errorf("restart broker: resume compaction: delete topic %s: %w", scratch, err)
	}
	return nil
}

// Close shuts the cluster down and removes its data directory unless
// BrokerOptions.DataDir named it. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.cluster != nil {
		b.cluster.Close()
		b.cluster = nil
	}
	b.closeProxies()
	return b.removeDir()
}

func (b *Broker) closeProxies() {
	for _, px := range b.proxies {
		px.Close()
	}
}

func (b *Broker) removeDir() error {
	if b.tempDir == "" {
		return nil
	}
	if err := removeTempDir(b.tempDir); err != nil {
		return fmt.Errorf("remove broker data directory: %w", err)
	}
	return nil
}

// addrPort returns the port of a host:port address.
func addrPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}
