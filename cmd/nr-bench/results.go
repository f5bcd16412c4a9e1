package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// benchReport is results.json: everything needed to quote a figure and to
// rerun it (when, on what machine, with which versions, with which command
// line), so that the docs can cite a committed copy instead of a run that
// only ever existed on someone's disk.
type benchReport struct {
	Date        time.Time `json:"date"`
	CommandLine []string  `json:"command_line"`
	Machine     machine   `json:"machine"`
	Versions    versions  `json:"versions"`
	Window      string    `json:"window"`
	Warmup      string    `json:"warmup"`
	BridgeEnv   []string  `json:"bridge_env,omitempty"`
	Units       string    `json:"units"`
	Scenarios   []result  `json:"scenarios"`
}

// machine describes the host, since every figure depends on it.
type machine struct {
	NProc         int    `json:"nproc"`
	MemTotalBytes int64  `json:"mem_total_bytes"`
	CPUModel      string `json:"cpu_model,omitempty"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	Kernel        string `json:"kernel,omitempty"`
}

// versions are the programs that were measured and measured against.
type versions struct {
	NRBridge   string `json:"nr_bridge"` // git describe of the module, "-dirty" with local changes
	Go         string `json:"go"`
	NATSServer string `json:"nats_server"`
	Mosquitto  string `json:"mosquitto"`
	Paho       string `json:"paho_golang_baseline"`
}

// unitsNote says how to read the figures of results.json.
const unitsNote = "P50/P99/P999, CPUPerMsg, Cmd*P50/P99 and CmdCPUPerCmd in nanoseconds; PeakRSS in bytes; " +
	"MsgPerSec and Cmd*PerSec per second of the window; Acked = events nr-sim saw PUBACKed, " +
	"Received = distinct msg_ids read back, Lost = Acked - Received (never negative), Dup = reads beyond the first of a msg_id"

func newReport(args []string, o options, v versions) benchReport {
	return benchReport{
		Date:        time.Now().UTC(),
		CommandLine: args,
		Machine:     hostMachine(),
		Versions:    v,
		Window:      o.duration.String(),
		Warmup:      o.warmup.String(),
		BridgeEnv:   o.bridgeEnv,
		Units:       unitsNote,
	}
}

// writeReport writes rep as dir/results.json and returns the file's path.
func writeReport(dir string, rep benchReport) (string, error) {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode results: %w", err)
	}
	path := filepath.Join(dir, "results.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	return path, nil
}

func hostMachine() machine {
	m := machine{NProc: numCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemTotalBytes = memTotal(b)
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = procField(b, "model name")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// memTotal returns MemTotal of /proc/meminfo in bytes, 0 if absent.
func memTotal(meminfo []byte) int64 {
	f := strings.Fields(procField(meminfo, "MemTotal")) // "16314564 kB"
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0
	}
	if len(f) > 1 && f[1] == "kB" {
		n *= 1024
	}
	return n
}

// procField returns the value of the first "key: value" line of a /proc
// file whose key is key.
func procField(b []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// gitDescribe names the nr-bridge revision measured; "" outside a git
// checkout.
func gitDescribe(repo string) string {
	b, err := exec.Command("git", "-C", repo, "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
