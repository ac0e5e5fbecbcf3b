package bridge

import (
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/statefeed/statefeed/internal/yamlconf"
)

// Config is the bridge's configuration file.
type Config struct {
	Source   SourceConfig   `yaml:"source,required"`
	Kafka    KafkaConfig    `yaml:"kafka,required"`
	Mappings []string       `yaml:"mappings,required"`
	Log      LogConfig      `yaml:"log"`
	Metrics  MetricsConfig  `yaml:"metrics"`
	Snapshot SnapshotConfig `yaml:"snapshot"`
	// ShutdownTimeout bounds how long a stop waits for Kafka to acknowledge
	// what is in flight.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// File is the path the configuration was read from; mapping paths are
	// relative to its directory.
	File string `yaml:"-"`
}

// SourceConfig says which database to read and how.
type SourceConfig struct {
	DSN               string        `yaml:"dsn,required"`
	Name              string        `yaml:"name"`
	Slot              string        `yaml:"slot"`
	Publication       string        `yaml:"publication"`
	CreateSlot        bool          `yaml:"create_slot"`
	CreatePublication bool          `yaml:"create_publication"`
	StatusInterval    time.Duration `yaml:"status_interval"`
}

// KafkaConfig says where to publish.
type KafkaConfig struct {
	Brokers                []string      `yaml:"brokers,required"`
	ClientID               string        `yaml:"client_id"`
	TopicDefaults          TopicDefaults `yaml:"topic_defaults"`
	AllowUncompactedTopics bool          `yaml:"allow_uncompacted_topics"`
	Linger                 time.Duration `yaml:"linger"`
	MaxBufferedRecords     int           `yaml:"max_buffered_records"`
	MaxMessageBytes        int           `yaml:"max_message_bytes"`
}

// TopicDefaults apply to the topics the bridge creates.
type TopicDefaults struct {
	Partitions        int `yaml:"partitions"`
	ReplicationFactor int `yaml:"replication_factor"`
}

// SnapshotConfig sets up the initial snapshot and backfills.
type SnapshotConfig struct {
	// Mode is "initial" (read every mapped table when the bridge creates
	// its slot) or "never".
	Mode string `yaml:"mode"`
	// ChunkSize is the most rows one chunk reads.
	ChunkSize int `yaml:"chunk_size"`
	// Workers is how many chunks are read at once, across tables and
	// ranges of large tables.
	Workers int `yaml:"workers"`
	// ChunkTimeout is the statement_timeout of chunk reads: no backfill
	// transaction stays open longer. A chunk that hits it is read again
	// in halves.
	ChunkTimeout time.Duration `yaml:"chunk_timeout"`
	// ReconcileKeysPerPass bounds the keys a reconcile holds in memory;
	// a larger topic is reconciled in several passes.
	ReconcileKeysPerPass int `yaml:"reconcile_keys_per_pass"`
	// ProgressTopic is the compacted topic where backfill progress is
	// kept; default statefeed.backfills.<source.name>.<source.slot>.
	ProgressTopic string `yaml:"progress_topic"`
}

// MetricsConfig sets up the HTTP endpoint for metrics and health.
type MetricsConfig struct {
	// Listen is the address of /metrics and /healthz, e.g.
	// "127.0.0.1:9187"; empty turns the endpoint off.
	Listen string `yaml:"listen"`
}

// LogConfig sets up the bridge's log.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// ProgressInterval is how often a progress line is logged while
	// records flow.
	ProgressInterval time.Duration `yaml:"progress_interval"`
}

// DefaultConfig returns the values a configuration file starts from.
func DefaultConfig() Config {
	return Config{
		Source: SourceConfig{
			Slot:              "statefeed",
			Publication:       "statefeed",
			CreateSlot:        true,
			CreatePublication: true,
			StatusInterval:    10 * time.Second,
		},
		Kafka: KafkaConfig{
			ClientID:      "statefeed-bridge",
			TopicDefaults: TopicDefaults{Partitions: 1, ReplicationFactor: -1},
		},
		Log: LogConfig{Level: "info", Format: "text", ProgressInterval: 30 * time.Second},
		Snapshot: SnapshotConfig{
			Mode:                 "initial",
			ChunkSize:            4096,
			Workers:              2,
			ChunkTimeout:         time.Minute,
			ReconcileKeysPerPass: 500_000,
		},
		ShutdownTimeout: 30 * time.Second,
	}
}

var (
	identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	topicRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
)

// maxMessageBytes is the largest kafka.max_message_bytes: the Kafka client
// writes at most 100 MiB to a broker in one request.
const maxMessageBytes = 100 << 20

// LoadConfig reads and validates a configuration file, expanding ${VAR}
// and ${VAR:-default} in values with lookup (os.LookupEnv when nil). Every
// problem is reported at once, one a line, as file:line: path: message.
func LoadConfig(file string, lookup func(string) (string, bool)) (*Config, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	var p yamlconf.Problems
	root := yamlconf.Parse(file, data, &p)
	if root == nil {
		return nil, p.Err()
	}
	expandEnv(file, root, "", lookup, &p)
	cfg := DefaultConfig()
	cfg.File = file
	yamlconf.Decode(file, root, "", &cfg, &p)
	// Values that failed to decode keep their defaults, so validating the
	// rest as well reports every problem in one pass.
	cfg.validate(file, root, &p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	cfg.resolvePaths()
	return &cfg, nil
}

// expandEnv expands environment references in every scalar value (never in
// keys) in place, so positions stay those of the file.
func expandEnv(file string, n *yaml.Node, path string, lookup func(string) (string, bool), p *yamlconf.Problems) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			expandEnv(file, c, path, lookup, p)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandEnv(file, n.Content[i+1], yamlconf.Join(path, n.Content[i].Value), lookup, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expandEnv(file, c, fmt.Sprintf("%s[%d]", path, i), lookup, p)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		v, err := yamlconf.ExpandEnv(n.Value, lookup)
		if err != nil {
			p.Add(file, n, path, "%v", err)
			return
		}
		n.Value = v
	}
}

// validate checks values that decoded but make no sense. It finds the
// node of each key again so that problems carry lines.
func (c *Config) validate(file string, root *yaml.Node, p *yamlconf.Problems) {
	at := func(path string) *yaml.Node { return lookupNode(root, path) }
	if _, err := pgconn.ParseConfig(c.Source.DSN); err != nil {
		// The parse error may quote the password; say only what is wrong.
		p.Add(file, at("source.dsn"), "source.dsn", "not a valid PostgreSQL connection string or URL; use postgres://user@host:5432/dbname or host=... dbname=...")
	}
	if !identRE.MatchString(c.Source.Slot) || len(c.Source.Slot) > 63 {
		p.Add(file, at("source.slot"), "source.slot", "%q is not a valid replication slot name; use lower-case letters, digits and underscores, at most 63", c.Source.Slot)
	}
	if c.Source.Publication == "" || len(c.Source.Publication) > 63 {
		p.Add(file, at("source.publication"), "source.publication", "must be 1 to 63 characters")
	}
	if c.Source.StatusInterval < 100*time.Millisecond || c.Source.StatusInterval > 10*time.Second {
		p.Add(file, at("source.status_interval"), "source.status_interval", "%s is out of range; use a duration from 100ms to 10s (PostgreSQL drops replication connections that stay silent for wal_sender_timeout)", c.Source.StatusInterval)
	}
	if len(c.Kafka.Brokers) == 0 {
		p.Add(file, at("kafka.brokers"), "kafka.brokers", "at least one seed broker is required, e.g. [\"kafka-1:9092\"]")
	}
	for i, b := range c.Kafka.Brokers {
		if !strings.Contains(b, ":") && !strings.Contains(b, "${") {
			path := fmt.Sprintf("kafka.brokers[%d]", i)
			p.Add(file, at(path), path, "%q has no port; write host:port", b)
		}
	}
	if c.Kafka.TopicDefaults.Partitions < 1 || c.Kafka.TopicDefaults.Partitions > math.MaxInt32 {
		p.Add(file, at("kafka.topic_defaults.partitions"), "kafka.topic_defaults.partitions", "%d is not a partition count; use 1 or more", c.Kafka.TopicDefaults.Partitions)
	}
	if rf := c.Kafka.TopicDefaults.ReplicationFactor; rf == 0 || rf < -1 || rf > math.MaxInt16 {
		p.Add(file, at("kafka.topic_defaults.replication_factor"), "kafka.topic_defaults.replication_factor", "%d is not a replication factor; use 1 or more, or -1 for the broker's default", rf)
	}
	if mb := c.Kafka.MaxMessageBytes; mb != 0 && (mb < 1024 || mb > maxMessageBytes) {
		p.Add(file, at("kafka.max_message_bytes"), "kafka.max_message_bytes", "%d is out of range; use a size in bytes from 1024 to %d (100 MiB)", mb, maxMessageBytes)
	}
	if c.Kafka.Linger < 0 {
		p.Add(file, at("kafka.linger"), "kafka.linger", "%s is negative; use a duration such as 5ms", c.Kafka.Linger)
	}
	if c.Kafka.MaxBufferedRecords < 0 {
		p.Add(file, at("kafka.max_buffered_records"), "kafka.max_buffered_records", "must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Add(file, at("log.level"), "log.level", "%q is not a level; use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		p.Add(file, at("log.format"), "log.format", "%q is not a format; use text or json", c.Log.Format)
	}
	if l := c.Metrics.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			p.Add(file, at("metrics.listen"), "metrics.listen", "%q is not an address; write host:port, e.g. 127.0.0.1:9187, or leave it empty to turn metrics off", l)
		}
	}
	if c.Log.ProgressInterval <= 0 {
		p.Add(file, at("log.progress_interval"), "log.progress_interval", "must be a positive duration such as 30s")
	}
	switch c.Snapshot.Mode {
	case "initial", "never":
	default:
		p.Add(file, at("snapshot.mode"), "snapshot.mode", "%q is not a mode; use initial (read the mapped tables when the slot is created) or never", c.Snapshot.Mode)
	}
	if c.Snapshot.ChunkSize < 1 || c.Snapshot.ChunkSize > 1_000_000 {
		p.Add(file, at("snapshot.chunk_size"), "snapshot.chunk_size", "%d is out of range; use 1 to 1000000 rows", c.Snapshot.ChunkSize)
	}
	if c.Snapshot.Workers < 1 || c.Snapshot.Workers > 64 {
		p.Add(file, at("snapshot.workers"), "snapshot.workers", "%d is out of range; use 1 to 64", c.Snapshot.Workers)
	}
	if c.Snapshot.ChunkTimeout < time.Second {
		p.Add(file, at("snapshot.chunk_timeout"), "snapshot.chunk_timeout", "%s is too short; use a duration of 1s or more", c.Snapshot.ChunkTimeout)
	}
	if c.Snapshot.ReconcileKeysPerPass < 1000 {
		p.Add(file, at("snapshot.reconcile_keys_per_pass"), "snapshot.reconcile_keys_per_pass", "%d is too small; use 1000 or more", c.Snapshot.ReconcileKeysPerPass)
	}
	if t := c.Snapshot.ProgressTopic; t != "" && !topicRE.MatchString(t) {
		p.Add(file, at("snapshot.progress_topic"), "snapshot.progress_topic", "%q is not a valid topic name; use up to 249 letters, digits, '.', '_' and '-'", t)
	}
	if c.ShutdownTimeout <= 0 {
		p.Add(file, at("shutdown_timeout"), "shutdown_timeout", "must be a positive duration such as 30s")
	}
}

// resolvePaths makes mapping paths relative to the configuration file's
// directory and fills in names derived from others.
func (c *Config) resolvePaths() {
	dir := filepath.Dir(c.File)
	for i, m := range c.Mappings {
		if !filepath.IsAbs(m) {
			c.Mappings[i] = filepath.Join(dir, m)
		}
	}
	if c.Source.Name == "" {
		if pc, err := pgconn.ParseConfig(c.Source.DSN); err == nil {
			c.Source.Name = pc.Database
		}
	}
	c.Snapshot.ProgressTopic = c.progressTopic()
}

// progressTopic returns snapshot.progress_topic, or its default.
func (c *Config) progressTopic() string {
	if c.Snapshot.ProgressTopic != "" {
		return c.Snapshot.ProgressTopic
	}
	return topicUnsafe.ReplaceAllString("statefeed.backfills."+c.Source.Name+"."+c.Source.Slot, "_")
}

var topicUnsafe = regexp.MustCompile(`[^a-zA-Z0-9._-]`)

// lookupNode finds the value node at a dotted path with optional [i]
// indexes, or nil.
func lookupNode(n *yaml.Node, path string) *yaml.Node {
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, part := range strings.Split(path, ".") {
		idx := -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			fmt.Sscanf(part[i:], "[%d]", &idx)
			part = part[:i]
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				next = n.Content[i+1]
			}
		}
		n = next
		if idx >= 0 {
			if n == nil || n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return nil
			}
			n = n.Content[idx]
		}
	}
	return n
}
