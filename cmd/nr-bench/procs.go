package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process with its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL after timeout.
func (p *proc) stop(timeout time.Duration) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitPort(port int, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited (see %s)", p.name, p.log.Name())
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("port %d not listening after %s", port, timeout)
}

func waitHTTP(url string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited (see %s)", p.name, p.log.Name())
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s", url, timeout)
}

// goBuild builds pkgs into dir, without -race. A non-empty modfile builds them against that
// go.mod instead of the repository's (-mod=mod, so its go.sum is completed
// from the module proxy when needed).
func goBuild(ctx context.Context, dir, modfile string, pkgs map[string]string) error {
	for name, pkg := range pkgs {
		args := []string{"build", "-o", filepath.Join(dir, name)}
		if modfile != "" {
			args = append(args, "-mod=mod", "-modfile="+modfile)
		}
		cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", pkg, err)
		}
	}
	return nil
}

// stockPahoModfile writes a copy of the repository's go.mod and go.sum into
// out/stock-paho without the replace of github.com/eclipse/paho.golang, and
// returns the go.mod's path. The baseline is built with it so that it is the
// minimal bridge a user would write with the released paho, while nr-bridge
// uses the patched copy in third_party/paho.golang.
func stockPahoModfile(ctx context.Context, repo, out string) (string, error) {
	dir := filepath.Join(out, "stock-paho")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(repo, f))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return "", err
		}
	}
	mod := filepath.Join(dir, "go.mod")
	cmd := exec.CommandContext(ctx, "go", "mod", "edit", "-modfile="+mod, "-dropreplace=github.com/eclipse/paho.golang")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go mod edit -dropreplace: %w", err)
	}
	return mod, nil
}

// brokerDropped copies the broker's log from dir into logs and counts
// Mosquitto's "Outgoing messages are being dropped" notices: each is a
// session whose queue (max_queued_messages) overflowed, so messages the
// broker had acknowledged to nr-sim were discarded before any bridge saw
// them.
func brokerDropped(dir, logs string) int {
	b, err := os.ReadFile(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return 0
	}
	_ = os.WriteFile(filepath.Join(logs, "mosquitto.log"), b, 0o644)
	return strings.Count(string(b), "Outgoing messages are being dropped")
}

// mosquittoConf adapts deploy/mosquitto/mosquitto.conf: a loopback listener
// on port, persistence in dir, log to a file.
func mosquittoConf(src string, port int, dir string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			switch f[0] {
			case "listener":
				line = fmt.Sprintf("listener %d 127.0.0.1", port)
				seen["listener"] = true
			case "persistence_location":
				line = "persistence_location " + dir + "/"
			case "log_dest":
				line = "log_dest file " + filepath.Join(dir, "mosquitto.log")
			case "log_type":
				// Notice stays: "Outgoing messages are being dropped" is
				// one, and explains a lost count (brokerDropped).
				if f[1] == "information" {
					continue
				}
			}
		}
		out = append(out, line)
	}
	if !seen["listener"] {
		return "", errors.New("no listener line in " + src)
	}
	if os.Geteuid() == 0 {
		// As root, mosquitto switches to the "mosquitto" user, which can
		// write neither the log nor the persistence files in dir.
		out = append(out, "user root")
	}
	path := filepath.Join(dir, "mosquitto.conf")
	return path, os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644)
}

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; fields after ')' are fixed.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st, nil
}

const ticksPerSec = 100

// peakRSS is VmHWM of pid in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
