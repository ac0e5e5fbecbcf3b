package bridge

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestConfigurationDocumented keeps docs/configuration.md in step with the
// configuration the loader accepts: every key, nested ones as a.b.
func TestConfigurationDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := yamlKeys(reflect.TypeFor[Config](), "")
	if len(keys) < 20 {
		t.Fatalf("found only %d keys in Config: %v", len(keys), keys)
	}
	for _, k := range keys {
		// A nested key is documented under its section by a dotted suffix
		// of its path: kafka.topic_defaults.partitions as
		// `topic_defaults.partitions` in the kafka section.
		found := false
		for suffix := k; !found; {
			found = strings.Contains(string(doc), "`"+suffix+"`")
			i := strings.IndexByte(suffix, '.')
			if i < 0 {
				break
			}
			suffix = suffix[i+1:]
		}
		if !found {
			t.Errorf("docs/configuration.md does not document %q", k)
		}
	}
}

func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		keys = append(keys, key)
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath() {
			keys = append(keys, yamlKeys(f.Type, key+".")...)
		}
	}
	return keys
}
