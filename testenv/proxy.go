package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from a loopback port to a target, and cuts
// them on demand to inject network faults between a client and PostgreSQL
// or the broker.
//
// Methods are safe for concurrent use. The proxy owns its goroutines; Close
// stops them and waits for them.
type Proxy struct {
	target string
	addr   string // stays the same across Pause and Resume

	mu     sync.Mutex
	ln     net.Listener // nil once closed
	conns  map[*proxyConn]struct{}
	paused bool
	closed bool

	wg sync.WaitGroup // accept loops and connection handlers
}

// proxyConn is one forwarded connection.
type proxyConn struct {
	client, server net.Conn
}

func (c *proxyConn) close() {
	c.client.Close()
	c.server.Close()
}

// NewProxy starts a proxy to target for one test and registers its Close
// with t.Cleanup. It fails the test when the proxy does not start.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// StartProxy listens on a free loopback port and forwards every connection
// to target (host:port), dialling it when the client connects. ctx bounds
// only the start; the proxy runs until Close.
func StartProxy(ctx context.Context, target string) (*Proxy, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start proxy to %s: %w", target, err)
	}
	p := &Proxy{
		target: target,
		addr:   ln.Addr().String(),
		ln:     ln,
		conns:  make(map[*proxyConn]struct{}),
	}
	p.wg.Add(1)
	go p.serve(ln)
	return p, nil
}

// Addr returns the proxy's host:port. It stays the same across Pause and
// Resume.
func (p *Proxy) Addr() string { return p.addr }

// Connections returns how many forwarded connections are open.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// CutAll closes every open connection on both sides; clients see the
// connection drop. New connections are accepted as before.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked()
}

func (p *Proxy) cutLocked() {
	for c := range p.conns {
		c.close()
		delete(p.conns, c)
	}
}

// Pause drops every open connection and, until Resume, closes each new one
// as soon as it is accepted, as when the target is down. The proxy keeps
// its port meanwhile: were it to stop listening, another process (a test
// starting a server on a free port) could take the port, and a client
// would reach that server instead, or Resume would fail.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.paused {
		return
	}
	p.paused = true
	p.cutLocked()
}

// Resume forwards new connections again after Pause.
func (p *Proxy) Resume() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
	return nil
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines to end. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		if p.ln != nil {
			p.ln.Close()
			p.ln = nil
		}
		p.cutLocked()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// serve accepts connections until ln is closed.
func (p *Proxy) serve(ln net.Listener) {
	defer p.wg.Done()
	for {
		client, err := ln.Accept()
		if err != nil {
			return // closed by Close
		}
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		if paused {
			client.Close() // the client sees the target as down
			continue
		}
		p.wg.Add(1)
		go p.forward(client)
	}
}

// forward dials the target for client and copies both ways until either
// side closes or the proxy cuts the connection.
func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		client.Close() // the client sees the target as unreachable
		return
	}
	c := &proxyConn{client: client, server: server}
	p.mu.Lock()
	if p.closed || p.paused {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	// Either direction ending ends both: neither PostgreSQL nor Kafka
	// uses half-closed connections.
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	c.close()
	<-done

	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
