package bridge

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCheckReportsMappingProblems runs `bridge check` logic against the
// live catalog with a mapping that has a misspelt column and a key outside
// the replica identity: both are reported at once with file and line.
func TestCheckReportsMappingProblems(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE legacy.cust_mstr REPLICA IDENTITY DEFAULT`)
	writeMapping(t, e, "customer.yaml", `entity: customer
topic: `+e.prefix+`crm.customer.v1
table: legacy.cust_mstr
key: [cst_cd]
fields:
  code: cst_cd
  email: eml_adr
`)
	var out bytes.Buffer
	err := Check(context.Background(), e.cfg, &out)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Check = %v, want a *ConfigError", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`customer.yaml:7: fields.email: column "eml_adr" not found in table legacy.cust_mstr; did you mean "eml_addr"?`,
		`customer.yaml:4: key`,
		`REPLICA IDENTITY FULL`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 2 {
		t.Errorf("%d problem lines, want 2:\n%s", n, msg)
	}
}

// TestCheckReportsSetup runs check on a database where nothing is set up
// yet: the mappings pass, and the missing publication and slot are
// reported as what run will create, without creating them. When the
// configuration forbids creating them, they are errors with the SQL that
// creates them.
func TestCheckReportsSetup(t *testing.T) {
	e := newEnv(t)
	var out bytes.Buffer
	if err := Check(context.Background(), e.cfg, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"2 entities on 2 tables",
		`publication "` + e.db + `": missing; bridge run will create it`,
		`replication slot "` + e.db + `": missing; bridge run will create it`,
		`topic "` + e.prefix + `crm.customer.v1": missing; bridge run will create it`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("check output lacks %q:\n%s", want, got)
		}
	}

	e.cfg.Source.CreatePublication = false
	e.cfg.Source.CreateSlot = false
	err := Check(context.Background(), e.cfg, &out)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("check with creation forbidden = %v, want a *ConfigError", err)
	}
	for _, want := range []string{"CREATE PUBLICATION", "pg_create_logical_replication_slot"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
	if n := e.queryString(`SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '` + e.db + `'`); n != "0" {
		t.Errorf("check created %s slots", n)
	}
	t.Logf("bridge check output:\n%s", got)
}

// TestCheckRefusesUncompactedTopic: an existing topic that is not
// compacted blocks run, so check reports it and fails.
func TestCheckRefusesUncompactedTopic(t *testing.T) {
	e := newEnv(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, -1, nil, e.prefix+"crm.customer.v1"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = Check(context.Background(), e.cfg, &out)
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "cleanup.policy=delete") {
		t.Fatalf("Check = %v, want a *ConfigError about cleanup.policy", err)
	}
}
