package testenv

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestProxyPostgres(t *testing.T) {
	pg := NewPostgres(t)
	px := NewProxy(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.Port())))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=5", px.Addr())

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := px.Connections(); n != 1 {
		t.Errorf("Connections = %d, want 1", n)
	}

	px.CutAll()
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("ping succeeded over a cut connection")
	}
	// The failed ping may open a short-lived connection of its own (a
	// cancel request), so wait for the count to settle.
	if err := Eventually(ctx, 5*time.Second, func(context.Context) (bool, string, error) {
		n := px.Connections()
		return n == 0, fmt.Sprintf("Connections = %d, want 0", n), nil
	}); err != nil {
		t.Errorf("after CutAll: %v", err)
	}

	// New connections are accepted after a cut.
	conn2, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect after CutAll: %v", err)
	}
	defer conn2.Close(ctx)

	px.Pause()
	if err := conn2.Ping(ctx); err == nil {
		t.Error("ping succeeded over a connection dropped by Pause")
	}
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Error("connected through a paused proxy")
	}

	if err := px.Resume(); err != nil {
		t.Fatal(err)
	}
	conn3, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect after Resume: %v", err)
	}
	var one int
	if err := conn3.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("SELECT 1 after Resume = %d, %v", one, err)
	}
	conn3.Close(ctx)

	if err := px.Close(); err != nil {
		t.Fatal(err)
	}
	if err := px.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Error("connected through a closed proxy")
	}
}

func TestProxiedBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := StartBroker(ctx, BrokerOptions{Brokers: 2, Proxied: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	proxies := b.Proxies()
	var proxyAddrs []string
	for _, px := range proxies {
		proxyAddrs = append(proxyAddrs, px.Addr())
	}
	if diff := cmp.Diff(proxyAddrs, b.Addrs()); diff != "" {
		t.Errorf("Addrs are not the proxies' addresses (-proxies +Addrs):\n%s", diff)
	}

	cl := newClient(t, b)
	meta, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var advertised []string
	for _, bd := range meta.Brokers {
		advertised = append(advertised, net.JoinHostPort(bd.Host, strconv.Itoa(int(bd.Port))))
	}
	if diff := cmp.Diff(proxyAddrs, advertised); diff != "" {
		t.Errorf("brokers advertise other addresses than the proxies' (-proxies +advertised):\n%s", diff)
	}

	createCompacted(ctx, t, cl, "t", 4)
	produce(ctx, t, cl, "t", rec("a", "1"), rec("b", "1"))

	// A cut costs a retry, not a record.
	for _, px := range proxies {
		px.CutAll()
	}
	produce(ctx, t, cl, "t", rec("a", "2"))

	// While the proxies are paused, connections are dropped; a record
	// produced meanwhile is delivered after Resume.
	for _, px := range proxies {
		px.Pause()
	}
	// A paused proxy accepts and drops at once: a read sees the end.
	if c, err := net.Dial("tcp", proxies[0].Addr()); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
			t.Errorf("read through a paused proxy = %d, %v; want the connection closed", n, err)
		}
		c.Close()
	}
	delivered := make(chan error, 1)
	late := rec("c", "late")
	late.Topic = "t"
	cl.Produce(ctx, late, func(_ *kgo.Record, err error) { delivered <- err })
	for _, px := range proxies {
		if err := px.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-delivered; err != nil {
		t.Fatalf("record produced while paused: %v", err)
	}
	produce(ctx, t, cl, "t", rec("b", ""))

	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	produce(ctx, t, cl, "t", rec("d", "1"))

	msgs, err := ReadTopic(ctx, b.Addrs(), "t")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"a": []byte("2"), "c": []byte("late"), "d": []byte("1")}
	if d := DiffViews(CompactedView(msgs), want); d != "" {
		t.Error(d)
	}
}
