package bridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statefeed/statefeed/publish"
)

// TestConfigAcceptsOnlyWhatTheProducerTakes checks that a value LoadConfig
// accepts is one the Kafka client accepts too: the rest must be refused by
// LoadConfig, with file, line and key, rather than at start-up in the
// client's own wording.
func TestConfigAcceptsOnlyWhatTheProducerTakes(t *testing.T) {
	for _, kafka := range []string{
		"max_message_bytes: 1",
		"max_message_bytes: 209715200", // 200 MiB: under the documented 1 GiB limit
		"linger: -1s",
	} {
		t.Run(kafka, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "bridge.yaml")
			body := "source:\n  dsn: postgres://u@localhost/db\nkafka:\n  brokers: [\"localhost:9092\"]\n  " + kafka + "\nmappings: [m]\n"
			if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(f, lookupIn(nil))
			if err != nil {
				if !strings.Contains(err.Error(), "bridge.yaml:5: kafka.") {
					t.Errorf("refused without file:line: key: %v", err)
				}
				return
			}
			if cfg.Kafka.Linger < 0 {
				t.Errorf("kafka.linger %s accepted", cfg.Kafka.Linger)
			}
			p, err := publish.NewProducer(publish.Options{Brokers: cfg.Kafka.Brokers, Linger: cfg.Kafka.Linger, MaxMessageBytes: int32(cfg.Kafka.MaxMessageBytes)})
			if err != nil {
				t.Errorf("LoadConfig accepted it, the producer refuses it at start-up: %v", err)
				return
			}
			p.Close()
		})
	}
}
