package testserver

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configures StartNATS and StartNATSProcess. The zero value is
// a JetStream-enabled server on a free port of 127.0.0.1 with its store in
// t.TempDir, no TLS and no authentication.
type NATSOptions struct {
	// Port is the client port on 127.0.0.1; 0 picks a free one. (In
	// nats-server itself 0 means 4222; this package maps 0 to
	// server.RANDOM_PORT.)
	Port int

	// StoreDir is the JetStream store directory (nats-server appends
	// "jetstream/"); empty means a new t.TempDir. It is kept across
	// Restart.
	StoreDir string

	// Verbose logs the server to stderr with debug output
	// (ConfigureLogger for StartNATS, -D for StartNATSProcess). Without
	// it, StartNATS keeps recent notices, warnings and errors in memory
	// and logs them if the test fails; StartNATSProcess always writes its
	// log to a file.
	Verbose bool

	// TLS, when set, makes the client port TLS-only with these files;
	// RequireClientCert turns on client certificate verification. URL
	// then starts with tls://.
	TLS *ServerTLS

	// Users maps user names to passwords; when not empty, clients must
	// authenticate with one of them. Do not combine with Token.
	Users map[string]string

	// Token, when set, is the authorization token clients must present.
	Token string
}

// NATSServer is what the in-process NATS and the NATSProcess have in
// common, for tests that run against either.
type NATSServer interface {
	// URL returns the client URL.
	URL() string
	// Port returns the client port, stable across Restart.
	Port() int
	// Stop shuts the server down and waits for it.
	Stop()
	// Restart stops the server if running and starts it again on the same
	// port with the same JetStream store.
	Restart()
}

var (
	_ NATSServer = (*NATS)(nil)
	_ NATSServer = (*NATSProcess)(nil)
)

// NATS is an in-process nats-server with JetStream, started by StartNATS.
// Its methods are safe for concurrent use.
type NATS struct {
	t        testing.TB
	opts     NATSOptions
	storeDir string
	logs     *ringLogger

	mu   sync.Mutex
	srv  *server.Server
	port int
}

// StartNATS starts an in-process nats-server with JetStream and returns
// once it accepts connections (at most 10 s). It fails the test if the
// server cannot start; a cleanup shuts it down and, if the test failed,
// logs its recent warnings and errors.
func StartNATS(t testing.TB, opts NATSOptions) *NATS {
	t.Helper()
	n := &NATS{t: t, opts: opts, storeDir: opts.StoreDir, logs: newRingLogger(500)}
	if n.storeDir == "" {
		n.storeDir = t.TempDir()
	}
	t.Cleanup(func() {
		if t.Failed() && !opts.Verbose {
			t.Logf("testserver: last %d nats-server log lines:\n%s", logTailLines, n.logs.tail(logTailLines))
		}
	})
	t.Cleanup(n.Shutdown)
	n.port = opts.Port
	if n.port == 0 {
		n.port = server.RANDOM_PORT
	}
	if err := n.start(); err != nil {
		t.Fatalf("testserver: start nats-server: %v", err)
	}
	return n
}

func (n *NATS) start() error {
	so := &server.Options{
		ServerName: "testserver",
		Host:       "127.0.0.1",
		Port:       n.port,
		JetStream:  true,
		StoreDir:   n.storeDir,
		NoSigs:     true,
		Debug:      n.opts.Verbose,
		// Keep JetStream from reserving 75% of the disk.
		JetStreamMaxStore:      1 << 30,
		JetStreamMaxMemory:     256 << 20,
		DisableJetStreamBanner: true,
	}
	if tc := n.opts.TLS; tc != nil {
		cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: tc.CertFile, KeyFile: tc.KeyFile, CaFile: tc.CAFile, Verify: tc.RequireClientCert,
		})
		if err != nil {
			return fmt.Errorf("TLS config: %w", err)
		}
		so.TLS, so.TLSVerify, so.TLSConfig, so.TLSTimeout = true, tc.RequireClientCert, cfg, 2
		so.TLSCert, so.TLSKey, so.TLSCaCert = tc.CertFile, tc.KeyFile, tc.CAFile
	}
	for _, u := range sortedKeys(n.opts.Users) {
		so.Users = append(so.Users, &server.User{Username: u, Password: n.opts.Users[u]})
	}
	so.Authorization = n.opts.Token

	s, err := server.NewServer(so)
	if err != nil {
		return err
	}
	n.logs.add("====", "testserver: starting nats-server %s on port %d, store %s", []any{server.VERSION, n.port, n.storeDir})
	if n.opts.Verbose {
		s.ConfigureLogger()
	} else {
		// Without a logger a JetStream start failure is silent.
		s.SetLogger(n.logs, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(startTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("not ready for connections after %v; recent log:\n%s", startTimeout, n.logs.tail(logTailLines))
	}
	n.mu.Lock()
	n.srv = s
	n.port = s.Addr().(*net.TCPAddr).Port
	n.mu.Unlock()
	return nil
}

// URL returns the client URL, nats://127.0.0.1:port, or tls://… with TLS.
func (n *NATS) URL() string { return natsURL(n.opts, n.Port()) }

// Port returns the client port. It stays the same across Restart.
func (n *NATS) Port() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.port
}

// StoreDir returns the JetStream store directory given to the server.
func (n *NATS) StoreDir() string { return n.storeDir }

// Server returns the running server, for in-process connections
// (nats.InProcessServer) and introspection; nil after Shutdown. A Restart
// replaces it.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Shutdown stops the server and waits until it is down; JetStream data is
// flushed to StoreDir. It is a no-op when the server is not running.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Stop is Shutdown; it lets NATS satisfy NATSServer.
func (n *NATS) Stop() { n.Shutdown() }

// Restart shuts the server down if it is running and starts a new one on
// the same port and StoreDir, so JetStream streams and messages persist.
// It returns once the new server accepts connections and fails the test if
// it does not within 10 s. Call it from the test goroutine.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Shutdown()
	if err := n.start(); err != nil {
		n.t.Fatalf("testserver: restart nats-server on port %d: %v", n.Port(), err)
	}
}

// NATSProcess is a nats-server binary running as a child process, started
// by StartNATSProcess, for tests that must kill or freeze the server. Its
// methods are safe for concurrent use.
type NATSProcess struct {
	t        testing.TB
	opts     NATSOptions
	port     int
	storeDir string
	logPath  string
	proc     *process
}

// StartNATSProcess runs the nats-server binary (from PATH, else
// /usr/sbin/nats-server) with -a 127.0.0.1 -p <port> -js -sd <StoreDir>
// and returns once the port accepts TCP (at most 10 s). The binary may be
// older than the embedded server (Debian ships 2.9.10). It fails the test
// if the binary is missing or the server does not come up; a cleanup kills
// it and, if the test failed, logs the last 50 lines of its log.
func StartNATSProcess(t testing.TB, opts NATSOptions) *NATSProcess {
	t.Helper()
	bin := findBinary(t, "nats-server", "nats-server")
	dir := t.TempDir()
	n := &NATSProcess{t: t, opts: opts, storeDir: opts.StoreDir, logPath: filepath.Join(dir, "nats-server.log")}
	if n.storeDir == "" {
		n.storeDir = filepath.Join(dir, "store")
	}
	n.proc = &process{name: "nats-server", bin: bin, logPath: n.logPath}
	logTailOnFailure(t, "nats-server", n.logPath)
	t.Cleanup(n.Kill)

	var err error
	for attempt := 1; ; attempt++ {
		n.port = opts.Port
		if n.port == 0 {
			if n.port, err = freePort(); err != nil {
				break
			}
		}
		if n.proc.args, err = n.args(dir); err != nil {
			break
		}
		err = n.start()
		// A free port can be taken before the server binds it.
		if err == nil || opts.Port != 0 || attempt == 3 {
			break
		}
	}
	if err != nil {
		t.Fatalf("testserver: start nats-server process: %v\nlast lines of %s:\n%s", err, n.logPath, tailFile(n.logPath, logTailLines))
	}
	return n
}

// args builds the command line, writing a config file into dir for what
// the flags cannot express (several users).
func (n *NATSProcess) args(dir string) ([]string, error) {
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", n.storeDir}
	if n.opts.Verbose {
		args = append(args, "-D")
	}
	if tc := n.opts.TLS; tc != nil {
		args = append(args, "--tlscert", tc.CertFile, "--tlskey", tc.KeyFile, "--tlscacert", tc.CAFile)
		if tc.RequireClientCert {
			args = append(args, "--tlsverify")
		} else {
			args = append(args, "--tls")
		}
	}
	if n.opts.Token != "" {
		args = append(args, "--auth", n.opts.Token)
	}
	if len(n.opts.Users) > 0 {
		var b strings.Builder
		b.WriteString("authorization {\n  users = [\n")
		for _, u := range sortedKeys(n.opts.Users) {
			fmt.Fprintf(&b, "    {user: %s, password: %s}\n", strconv.Quote(u), strconv.Quote(n.opts.Users[u]))
		}
		b.WriteString("  ]\n}\n")
		conf := filepath.Join(dir, "nats-server.conf")
		if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
			return nil, err
		}
		args = append(args, "-c", conf)
	}
	return args, nil
}

func (n *NATSProcess) start() error {
	exited, err := n.proc.start()
	if err != nil {
		return err
	}
	if err := waitTCP(n.addr(), startTimeout, exited); err != nil {
		n.proc.kill()
		return err
	}
	return stillRunning(exited)
}

func (n *NATSProcess) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// URL returns the client URL, nats://127.0.0.1:port, or tls://… with TLS.
func (n *NATSProcess) URL() string { return natsURL(n.opts, n.port) }

// Port returns the client port. It stays the same across Restart.
func (n *NATSProcess) Port() int { return n.port }

// StoreDir returns the JetStream store directory passed with -sd.
func (n *NATSProcess) StoreDir() string { return n.storeDir }

// LogPath returns the server's log file, holding the output of every run.
func (n *NATSProcess) LogPath() string { return n.logPath }

// Stop sends SIGTERM (resuming a paused server first) and waits for the
// process to exit, sending SIGKILL after 10 s. It is a no-op when the
// server is not running.
func (n *NATSProcess) Stop() { n.proc.stop(n.t, stopGrace) }

// Kill sends SIGKILL and waits for the process to exit, like a crash;
// JetStream writes not yet flushed are lost. It is a no-op when the server
// is not running.
func (n *NATSProcess) Kill() { n.proc.kill() }

// Pause freezes the server with SIGSTOP: connections stay open but nothing
// is answered, as with a hung server or a network partition. Resume undoes
// it; Stop, Kill and Restart also work on a paused server.
func (n *NATSProcess) Pause() {
	if err := n.proc.signal(syscall.SIGSTOP); err != nil {
		n.t.Errorf("testserver: pause nats-server: %v", err)
	}
}

// Resume continues a server frozen by Pause (SIGCONT).
func (n *NATSProcess) Resume() {
	if err := n.proc.signal(syscall.SIGCONT); err != nil {
		n.t.Errorf("testserver: resume nats-server: %v", err)
	}
}

// Restart stops the server if it is running (SIGTERM, like Stop) and starts
// it again on the same port with the same store directory, returning once
// the port accepts TCP. It fails the test if the server does not come back
// within 10 s. Call it from the test goroutine.
func (n *NATSProcess) Restart() {
	n.t.Helper()
	n.Stop()
	if err := n.start(); err != nil {
		n.t.Fatalf("testserver: restart nats-server process: %v\nlast lines of %s:\n%s", err, n.logPath, tailFile(n.logPath, logTailLines))
	}
}

func natsURL(opts NATSOptions, port int) string {
	u := url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	if opts.TLS != nil {
		u.Scheme = "tls"
	}
	return u.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ringLogger is a server.Logger that keeps the last lines of notices,
// warnings and errors in memory, so they can be shown when a test fails
// without writing to t after the test ended.
type ringLogger struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func newRingLogger(max int) *ringLogger { return &ringLogger{max: max} }

func (l *ringLogger) add(level, format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+fmt.Sprintf(format, v...))
	if len(l.lines) > l.max {
		l.lines = l.lines[len(l.lines)-l.max:]
	}
}

func (l *ringLogger) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := max(len(l.lines)-n, 0)
	return strings.Join(l.lines[start:], "\n")
}

func (l *ringLogger) Noticef(format string, v ...any) { l.add("[INF]", format, v) }
func (l *ringLogger) Warnf(format string, v ...any)   { l.add("[WRN]", format, v) }
func (l *ringLogger) Fatalf(format string, v ...any)  { l.add("[FTL]", format, v) }
func (l *ringLogger) Errorf(format string, v ...any)  { l.add("[ERR]", format, v) }
func (l *ringLogger) Debugf(string, ...any)           {}
func (l *ringLogger) Tracef(string, ...any)           {}
