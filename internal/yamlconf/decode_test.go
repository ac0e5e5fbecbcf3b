package yamlconf

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/statefeed/statefeed/internal/golden"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

type testConfig struct {
	Name     string            `yaml:"name,required"`
	Port     int               `yaml:"port"`
	Ratio    float64           `yaml:"ratio"`
	Debug    bool              `yaml:"debug"`
	Timeout  time.Duration     `yaml:"timeout"`
	Kafka    testKafka         `yaml:"kafka"`
	TLS      *testTLS          `yaml:"tls"`
	Labels   map[string]string `yaml:"labels"`
	Mappings []string          `yaml:"mappings"`
	Raw      yaml.Node         `yaml:"raw"`
	RawPtr   *yaml.Node        `yaml:"raw_ptr"`
	Ignored  string
}

type testKafka struct {
	Brokers []string `yaml:"brokers,required"`
	Acks    int      `yaml:"acks"`
}

type testTLS struct {
	CA string `yaml:"ca,required"`
}

func decodeString(t *testing.T, file, src string) (testConfig, Problems) {
	t.Helper()
	var p Problems
	cfg := testConfig{Port: 5432}
	n := Parse(file, []byte(src), &p)
	if n != nil {
		Decode(file, n, "", &cfg, &p)
	}
	return cfg, p
}

func TestDecodeValid(t *testing.T) {
	src := `name: demo
ratio: 0.5
debug: true
timeout: 1m30s
kafka:
  brokers: localhost:9092
  acks: "-1"
tls:
  ca: /etc/ca.pem
labels: {team: data, tier: "1"}
mappings: [a.yaml, b.yaml]
raw: {x: [1, 2]}
raw_ptr: hello
`
	cfg, p := decodeString(t, "bridge.yaml", src)
	if len(p) > 0 {
		t.Fatalf("unexpected problems:\n%v", p)
	}
	if cfg.Raw.Kind != yaml.MappingNode || cfg.Raw.Line != 12 {
		t.Errorf("raw node = kind %v line %d, want a mapping on line 12", cfg.Raw.Kind, cfg.Raw.Line)
	}
	if cfg.RawPtr == nil || cfg.RawPtr.Value != "hello" {
		t.Errorf("raw_ptr = %v, want the scalar hello", cfg.RawPtr)
	}
	cfg.Raw, cfg.RawPtr = yaml.Node{}, nil
	want := testConfig{
		Name: "demo", Port: 5432, Ratio: 0.5, Debug: true, Timeout: 90 * time.Second,
		Kafka:    testKafka{Brokers: []string{"localhost:9092"}, Acks: -1},
		TLS:      &testTLS{CA: "/etc/ca.pem"},
		Labels:   map[string]string{"team": "data", "tier": "1"},
		Mappings: []string{"a.yaml", "b.yaml"},
	}
	if diff := cmp.Diff(want, cfg, cmp.Comparer(func(a, b yaml.Node) bool { return a.Kind == b.Kind })); diff != "" {
		t.Errorf("decoded config (-want +got):\n%s", diff)
	}
}

// TestDecodeProblems checks the wording of every kind of problem against
// golden files; run with -update to rewrite them after a deliberate change.
func TestDecodeProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
	}{
		{"unknown_keys", "name: x\nnaem: y\nkafka:\n  brokers: [a]\n  brokerz: [b]\ncompletely_different: 1\n"},
		{"wrong_types", "name: [a]\nport: abc\nratio: fast\ndebug: maybe\ntimeout: 10\nkafka:\n  brokers: {a: b}\n  acks: 99999999999999999999\nlabels: [x]\nmappings: {a: 1}\n"},
		{"missing_required", "port: 1\nkafka: {}\ntls:\n  ca:\n"},
		{"duplicates", "name: a\nname: b\nkafka:\n  brokers: [a]\nlabels:\n  x: 1\n  x: 2\n"},
		{"list_paths", "name: a\nkafka:\n  brokers: [ok, {host: x}, [nested]]\n"},
		{"not_a_mapping", "- a\n- b\n"},
		{"syntax_error", "name: a\n  port: 1\n"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, p := decodeString(t, "bridge.yaml", tt.src)
			got := ""
			if err := p.Err(); err != nil {
				got = err.Error() + "\n"
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".golden"), got)
		})
	}
}

func TestProblemsSorted(t *testing.T) {
	p := Problems{
		{File: "b.yaml", Line: 1, Path: "x", Msg: "m"},
		{File: "a.yaml", Line: 9, Path: "y", Msg: "m"},
		{File: "a.yaml", Line: 2, Path: "z", Msg: "m; do this"},
		{File: "a.yaml", Line: 0, Path: "", Msg: "file-level"},
	}
	want := "a.yaml: file-level\na.yaml:2: z: m; do this\na.yaml:9: y: m\nb.yaml:1: x: m"
	if got := p.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
	if (Problems{}).Err() != nil {
		t.Error("empty Problems.Err() != nil")
	}
}

func TestSuggest(t *testing.T) {
	cands := []string{"email", "name", "created_at", "Topic", "id"}
	tests := []struct{ in, want string }{
		{"emial", "email"},
		{"emal", "email"},
		{"nmae", "name"},
		{"topic", "Topic"},
		{"creatd_at", "created_at"},
		{"zzz", ""},
		{"email", ""},
		{"x", ""},
		{"ip", "id"},
	}
	for _, tt := range tests {
		if got := Suggest(tt.in, cands); got != tt.want {
			t.Errorf("Suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"HOST": "db", "EMPTY": "", "PASS": "p$$w"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		in, want, err string
	}{
		{in: "plain", want: "plain"},
		{in: "${HOST}:5432", want: "db:5432"},
		{in: "${MISSING:-localhost}", want: "localhost"},
		{in: "${EMPTY:-dflt}", want: "dflt"},
		{in: "x${EMPTY}y", want: "xy"},
		{in: "${PASS}", want: "p$$w"},
		{in: "cost $5", want: "cost $5"},
		{in: "$${HOST}", want: "${HOST}"},
		{in: "${A:-${B}}", want: "${B}"},
		{in: "${MISSING}", err: "environment variable MISSING is not set; set it or give a default with ${MISSING:-default}"},
		{in: "${HOST", err: `unterminated "${HOST"; close it with "}" (write "$${" for a literal "${")`},
		{in: "${1X}", err: `invalid environment variable name "1X" in "${1X}"; use letters, digits and underscores`},
	}
	for _, tt := range tests {
		got, err := ExpandEnv(tt.in, lookup)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ExpandEnv(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ExpandEnv(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
