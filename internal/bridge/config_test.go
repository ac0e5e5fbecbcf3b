package bridge

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

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
			golden(t, "testdata/config/"+name+".golden", err.Error()+"\n")
		})
	}
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", file, diff)
	}
}
