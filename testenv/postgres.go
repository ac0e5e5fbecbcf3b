package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions configures StartPostgres. The zero value is ready to use.
type PostgresOptions struct {
	// Settings are extra server settings, passed as "-c name=value". They
	// override the defaults, which are: listen_addresses=127.0.0.1,
	// unix_socket_directories=<the cluster's temporary directory>,
	// wal_level=logical, max_replication_slots=20, max_wal_senders=20,
	// fsync=off, synchronous_commit=off and full_page_writes=off.
	//
	// fsync=off survives Kill (the page cache outlives the processes) but
	// synchronous_commit=off does not: a commit can sit in the WAL buffers
	// in shared memory for up to wal_writer_delay, and Kill loses it. A
	// crash test that needs a commit to survive sets synchronous_commit=on
	// here or in the transaction. Logical decoding only reads flushed WAL,
	// so a lost commit was never streamed either.
	Settings map[string]string

	// BinDir is the directory holding initdb and postgres. Empty means
	// search: $STATEFEED_PG_BINDIR, then `pg_config --bindir` if it holds
	// initdb, then the newest /usr/lib/postgresql/*/bin.
	BinDir string

	// StartTimeout bounds how long StartPostgres and Start wait for the
	// server to accept connections. Zero means 30 seconds.
	StartTimeout time.Duration
}

// Postgres is a throwaway PostgreSQL cluster: its data directory, socket
// and server log live in one temporary directory that Close removes. The
// server listens on 127.0.0.1 only and trusts every local connection,
// including replication connections, for the user "postgres".
//
// When the process runs as root, initdb and postgres run as the "postgres"
// system user, because both refuse to run as root.
//
// Methods are safe for concurrent use. Lifecycle methods (Start, Stop,
// Kill, Close) are serialised and block until the server has reached the
// requested state.
type Postgres struct {
	binDir   string
	dir      string // temporary directory: data, socket and log
	dataDir  string
	logPath  string
	cred     *syscall.Credential // nil: run as the current user
	settings map[string]string
	timeout  time.Duration

	mu     sync.Mutex
	port   int
	srv    *postmaster // nil while stopped
	closed bool
}

// postmaster is one run of the postgres server process.
type postmaster struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait has returned
	err  error         // cmd.Wait's result, set before done is closed
}

// NewPostgres starts a cluster for one test or benchmark and registers its
// Close with t.Cleanup. It fails the test when the cluster does not start,
// and logs the server's log tail when the test has failed.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := StartPostgres(ctx, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres server log (last 40 lines):\n%s", p.LogTail(40))
		}
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// StartPostgres initialises a new cluster in a fresh temporary directory,
// starts it on a free loopback port and returns once it accepts
// connections. Cancelling ctx aborts the start; the caller must Close the
// returned cluster.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = findBinDir(); err != nil {
			return nil, err
		}
	} else if !hasServerBinaries(binDir) {
		return nil, fmt.Errorf("PostgresOptions.BinDir %s: no initdb and postgres executables there", binDir)
	}

	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}

	dir, err := newTempDir("pg")
	if err != nil {
		return nil, fmt.Errorf("create postgres temporary directory: %w", err)
	}
	p := &Postgres{
		binDir:  binDir,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "postgres.log"),
		cred:    cred,
		timeout: opts.StartTimeout,
	}
	if p.timeout <= 0 {
		p.timeout = 30 * time.Second
	}
	p.settings = map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": dir,
		"wal_level":               "logical",
		"max_replication_slots":   "20",
		"max_wal_senders":         "20",
		"fsync":                   "off",
		"synchronous_commit":      "off",
		"full_page_writes":        "off",
	}
	// A Unix socket path is limited to 107 bytes; with a long TMPDIR, do
	// without the socket rather than fail: everything here uses TCP.
	if len(filepath.Join(dir, ".s.PGSQL.65535")) > 100 {
		p.settings["unix_socket_directories"] = ""
	}
	maps.Copy(p.settings, opts.Settings)

	if err := p.initdb(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	// The port is picked by binding :0 and closing, so another process can
	// take it before the postmaster binds it. Retry with a new port then.
	p.mu.Lock()
	defer p.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if p.port, err = FreePort(); err != nil {
			break
		}
		err = p.start(ctx)
		if err == nil {
			return p, nil
		}
		if attempt == 3 || !errors.Is(err, errPortInUse) {
			break
		}
	}
	p.closed = true
	os.RemoveAll(dir)
	return nil, err
}

// findBinDir finds the PostgreSQL server binaries, or says what to install.
func findBinDir() (string, error) {
	if dir := os.Getenv("STATEFEED_PG_BINDIR"); dir != "" {
		if !hasServerBinaries(dir) {
			return "", fmt.Errorf("STATEFEED_PG_BINDIR=%s: no initdb and postgres executables there; point it at the server's bin directory (for example /usr/lib/postgresql/16/bin)", dir)
		}
		return dir, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		// pg_config may come from a client-only package (libpq-dev), whose
		// bin directory has no server.
		if dir := strings.TrimSpace(string(out)); hasServerBinaries(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first: compare "15" and "9.6" as numbers.
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return -compareFloat(version(a), version(b)) })
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found in $STATEFEED_PG_BINDIR, `pg_config --bindir` or /usr/lib/postgresql/*/bin; " +
		"install the server (Debian/Ubuntu: apt-get install -y postgresql; Fedora/RHEL: dnf install -y postgresql-server; macOS: brew install postgresql) " +
		"or set STATEFEED_PG_BINDIR to the directory holding initdb")
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// serverCredential returns whom to run initdb and postgres as: nil for the
// current user, or the "postgres" system user when running as root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root: initdb and postgres refuse to run as root, and looking up the \"postgres\" system user failed: %w; install the PostgreSQL server package (it creates the user), create the user (useradd --system postgres), or run as a non-root user", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// command prepares a server binary to run as the server user, in its own
// process group, in the cluster's directory.
func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, name), args...)
	cmd.Dir = p.dir
	// A process group lets Kill and Close reach the backends too, and keeps
	// a terminal's Ctrl-C away from the server so we shut it down in order.
	// Pdeathsig asks the kernel for an immediate shutdown (SIGQUIT) if the
	// test binary dies without closing; it is set after the credential
	// change, which would otherwise clear it.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGQUIT,
		Credential: p.cred,
	}
	// CommandContext would SIGKILL only the leader; stop the whole group.
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (p *Postgres) initdb(ctx context.Context) error {
	if p.cred != nil {
		if err := os.Chown(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return fmt.Errorf("give %s to user postgres: %w", p.dir, err)
		}
	}
	var out bytes.Buffer
	cmd := p.command(ctx, "initdb",
		"-D", p.dataDir,
		"-U", "postgres",
		"--auth=trust",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync", // the cluster is throwaway
	)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		hint := ""
		if p.cred != nil {
			hint = fmt.Sprintf("; running as root, initdb runs as user postgres, which must be able to reach %s (check the permissions of $TMPDIR)", p.dir)
		}
		return fmt.Errorf("initdb %s: %w%s\n%s", p.dataDir, err, hint, lastLines(out.Bytes(), 20))
	}

	// initdb's --auth=trust already trusts local connections; say so
	// explicitly so the tests do not depend on its template.
	hba := "# Written by statefeed testenv: trust everything from the loopback.\n" +
		"local all         all                trust\n" +
		"host  all         all  127.0.0.1/32  trust\n" +
		"host  replication all  127.0.0.1/32  trust\n" +
		"local replication all                trust\n"
	hbaPath := filepath.Join(p.dataDir, "pg_hba.conf")
	if err := os.WriteFile(hbaPath, []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", hbaPath, err)
	}
	if p.cred != nil {
		if err := os.Chown(hbaPath, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return fmt.Errorf("give %s to user postgres: %w", hbaPath, err)
		}
	}
	return nil
}

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port already in use")

// start runs the postmaster on p.port and waits until it accepts
// connections. The caller holds p.mu.
func (p *Postgres) start(ctx context.Context) error {
	logFile, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close() // the server holds its own descriptor

	// Remember where this run's output starts, so a failure reports this
	// run and not an earlier one.
	logStart, _ := logFile.Seek(0, io.SeekEnd)

	args := []string{"-D", p.dataDir, "-p", strconv.Itoa(p.port)}
	for _, name := range slices.Sorted(maps.Keys(p.settings)) {
		args = append(args, "-c", name+"="+p.settings[name])
	}
	// Not CommandContext's ctx: the server outlives this call.
	cmd := p.command(context.Background(), "postgres", args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	srv := &postmaster{cmd: cmd, done: make(chan struct{})}
	go func() {
		srv.err = cmd.Wait()
		close(srv.done)
	}()
	p.srv = srv

	if err := p.waitReady(ctx, srv); err != nil {
		p.killLocked()
		tail := p.logSince(logStart, 30)
		if strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("start postgres on port %d: %w\nserver log:\n%s", p.port, err, tail)
	}
	return nil
}

// waitReady polls until the server accepts a connection, exits, or the
// start timeout or ctx expires.
func (p *Postgres) waitReady(ctx context.Context, srv *postmaster) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	dsn := p.dsn("postgres") + "&connect_timeout=2"
	var lastErr error
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		lastErr = err
		select {
		case <-srv.done:
			return fmt.Errorf("server exited during startup: %v", srv.err)
		case <-ctx.Done():
			return fmt.Errorf("server did not accept connections: %w (last attempt: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

// DSN returns a connection URL for the given database as user postgres,
// without TLS. Add "replication=database" for a logical replication
// connection.
func (p *Postgres) DSN(database string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dsn(database)
}

func (p *Postgres) dsn(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, url.PathEscape(database))
}

// Port returns the TCP port the server listens on; it stays the same
// across Stop and Start.
func (p *Postgres) Port() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.port
}

// BinDir returns the directory of the server binaries the cluster runs
// from; PostgreSQL's client tools of the same version, such as
// pg_recvlogical, are there too.
func (p *Postgres) BinDir() string { return p.binDir }

// CreateDatabase creates a database owned by postgres.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	if err := p.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// Exec runs sql, which may hold several statements separated by
// semicolons, in database over a new connection (simple query protocol,
// so several statements run in one implicit transaction unless they say
// otherwise). A *pgconn.PgError stays reachable with errors.As.
func (p *Postgres) Exec(ctx context.Context, database, sql string) error {
	conn, err := pgx.Connect(ctx, p.DSN(database))
	if err != nil {
		return fmt.Errorf("connect to database %q: %w", database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("exec in database %q: %w", database, err)
	}
	return nil
}

// Stop shuts the server down with a fast shutdown (clients are
// disconnected, data is kept) and waits for it to exit. If ctx ends first,
// Stop kills the server and reports it; the data survives through crash
// recovery. Stopping a stopped server does nothing.
func (p *Postgres) Stop(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked(ctx)
}

func (p *Postgres) stopLocked(ctx context.Context) error {
	srv := p.srv
	if srv == nil {
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown.
	if err := srv.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.killLocked()
		return fmt.Errorf("stop postgres: %w; killed it", err)
	}
	select {
	case <-srv.done:
		p.srv = nil
		return nil
	case <-ctx.Done():
		p.killLocked()
		return fmt.Errorf("stop postgres: fast shutdown did not finish: %w; killed it", ctx.Err())
	}
}

// Start starts a stopped or killed server again on the same port and data
// directory, and waits until it accepts connections (after crash recovery,
// if it was killed).
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return errors.New("start postgres: cluster is closed")
	case p.srv != nil:
		select {
		case <-p.srv.done: // it died on its own; start it again
			p.srv = nil
		default:
			return errors.New("start postgres: already running")
		}
	}
	// After Kill, the kernel may take a moment to detach the dead
	// backends from the old shared memory segment, and the postmaster
	// refuses to start while it is attached. That is the one start
	// failure worth retrying.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := p.start(ctx)
		if err == nil || !strings.Contains(err.Error(), "pre-existing shared memory block") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to the postmaster and all its backends, as a crash
// would, and waits until they are gone. Start recovers from it. Commits
// made with synchronous_commit=off (the default here) in the last few
// hundred milliseconds may be lost, as in a real crash. Killing a stopped
// server does nothing.
func (p *Postgres) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killLocked()
}

func (p *Postgres) killLocked() {
	srv := p.srv
	if srv == nil {
		return
	}
	pid := srv.cmd.Process.Pid
	killGroup(pid)
	<-srv.done
	p.srv = nil
	// The backends are not our children, so wait for the group to empty:
	// a backend still attached to shared memory stops the next start.
	// Signal 0 also finds zombies, which no longer hold shared memory, so
	// the wait is bounded.
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) && syscall.Kill(-pid, 0) == nil {
		<-tick.C
	}
}

func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// Close stops the server (killing it if it does not stop within 10
// seconds) and removes its temporary directory with the data and the log.
// It is idempotent.
func (p *Postgres) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopErr := p.stopLocked(ctx)
	if err := os.RemoveAll(p.dir); err != nil {
		return errors.Join(stopErr, fmt.Errorf("remove postgres directory: %w", err))
	}
	return stopErr
}

// LogTail returns the last n lines of the server log, across restarts. It
// returns an empty string once the cluster is closed.
func (p *Postgres) LogTail(n int) string {
	return p.logSince(0, n)
}

func (p *Postgres) logSince(offset int64, n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	return lastLines(b[offset:], n)
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
