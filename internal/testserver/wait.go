// Package testserver starts real brokers for integration tests: a Mosquitto
// process, nats-server in-process or as a process, and a kfake Kafka cluster,
// each on a free port of 127.0.0.1, plus a throw-away certificate authority.
//
// Every helper takes a testing.TB, calls t.Helper, and registers a t.Cleanup
// that stops what it started, so a test never leaks a server or a child
// process. Child processes also get SIGKILL if the test binary dies (Linux
// Pdeathsig), which makes the package Linux-only.
//
// Methods that can fail the test (Start*, Restart) call t.Fatalf and so must
// run on the test goroutine; Stop, Kill, Pause and Resume report with t.Errorf
// and may be called from any goroutine.
package testserver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// pollInterval is how often WaitFor and the readiness checks retry.
const pollInterval = 10 * time.Millisecond

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 10 * time.Second

// logTailLines is how many log lines are dumped when a test fails.
const logTailLines = 50

// WaitFor calls cond every 10 ms until it returns true and fails the test
// with t.Fatalf, naming what, if that has not happened within timeout. cond
// is called once more at the deadline, so a slow last poll is not lost. It
// must be called from the test goroutine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testserver: timed out after %v waiting for %s", timeout, what)
			return
		}
		<-tick.C
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: it
// listens on port 0 and closes the listener. Another process can take the
// port before the caller binds it, so prefer letting a server pick its own
// port where it can.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("testserver: find a free port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// errExited means the server process ended while we waited for it.
var errExited = errors.New("process exited")

// waitTCP dials addr until it accepts a connection, exited is closed (the
// process died) or timeout passes.
func waitTCP(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %v: %w", addr, timeout, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("waiting for %s: %w", addr, errExited)
		case <-time.After(pollInterval):
		}
	}
}

// stillRunning fails if the process exited although its port answered:
// then another process held the port.
func stillRunning(exited <-chan struct{}) error {
	select {
	case <-exited:
		return fmt.Errorf("port answered but the server is gone, another process may hold the port: %w", errExited)
	default:
		return nil
	}
}

// tailFile returns the last n lines of the file at path, or a note saying
// why it could not be read.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// logTailOnFailure registers a cleanup that dumps the last lines of a log
// file if the test failed. Cleanups run last-in first-out, so callers
// register it before the cleanup that stops the server: it then runs after
// the server stopped and the log is complete.
func logTailOnFailure(t testing.TB, name, path string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testserver: last %d lines of %s log %s:\n%s", logTailLines, name, path, tailFile(path, logTailLines))
		}
	})
}
