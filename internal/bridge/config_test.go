package bridge

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/statefeed/statefeed/internal/golden"

	"github.com/google/go-cmp/cmp"
)

func lookupIn(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestLoadConfig(t *testing.T) {
	cfg, err := LoadConfig("testdata/config/good.yaml", lookupIn(map[string]string{"PGPASS": "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.File = "testdata/config/good.yaml"
	want.Source.DSN = "postgres://bridge:s3cret@db.internal:5432/legacy"
	want.Source.Name = "legacy"
	want.Source.Slot = "crm_feed"
	want.Kafka.Brokers = []string{"k1:9092", "k2:9092"}
	want.Kafka.TopicDefaults.Partitions = 6
	want.Mappings = []string{filepath.Join("testdata/config", "mappings")}
	want.Snapshot.ProgressTopic = "statefeed.backfills.legacy.crm_feed" // derived from the name and the slot
	if diff := cmp.Diff(&want, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if cfg.Source.StatusInterval != 10*time.Second || !cfg.Source.CreateSlot {
		t.Errorf("defaults not kept: %+v", cfg.Source)
	}
}

// TestConfigErrors checks the wording of configuration errors: every
// problem at once, with file, line and path.
func TestConfigErrors(t *testing.T) {
	for _, name := range []string{"broken", "unset"} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig("testdata/config/"+name+".yaml", lookupIn(nil))
			if err == nil {
				t.Fatal("no error")
			}
			golden.Check(t, "testdata/config/"+name+".golden", err.Error()+"\n")
		})
	}
}
