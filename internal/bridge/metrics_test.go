package bridge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/statefeed/statefeed/testenv"
)

// TestMetricsEndpoint scrapes /metrics and /healthz of a streaming bridge.
func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e.cfg.Metrics.Listen = addr
	b := e.start()
	e.exec(`INSERT INTO legacy.cust_mstr (cst_cd, cst_nm) SELECT 'M' || i, 'n' FROM generate_series(1, 12) i`)
	e.waitConverged()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	published := regexp.MustCompile(`(?m)^statefeed_records_published_total (\d+)$`)
	err = testenv.Eventually(context.Background(), 10*time.Second, func(context.Context) (bool, string, error) {
		_, body := get("/metrics")
		m := published.FindStringSubmatch(body)
		if m == nil {
			return false, "no statefeed_records_published_total in:\n" + body, nil
		}
		n, _ := strconv.Atoi(m[1])
		return n == 12, fmt.Sprintf("statefeed_records_published_total = %d, want 12", n), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, body := get("/metrics")
	for _, want := range []string{"# TYPE statefeed_transactions_confirmed_total counter", "statefeed_streaming 1", "statefeed_confirmed_lsn_bytes ",
		"statefeed_backfills_running 0", "# TYPE statefeed_backfill_records_total counter"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want)).MatchString(body) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q while streaming, want 200", code, body)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("the metrics endpoint still answers after the bridge stopped")
	}
}
