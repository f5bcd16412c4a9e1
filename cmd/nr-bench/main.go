// Command nr-bench benchmarks nr-bridge against a minimal bridge (the
// baseline, cmd/nr-bench/baseline) on one host: it builds nr-bridge, nr-sim
// and the baseline, and for every scenario and target starts a fresh
// Mosquitto (deploy/mosquitto/mosquitto.conf on a free loopback port), a
// fresh nats-server with JetStream, the target, and nr-sim as separate
// processes, reads NR_EVENTS with an ordered JetStream consumer, and prints
// msg/s, latency (publisher timestamp to JetStream consumer), the target's
// CPU per message and peak RSS (from /proc), lost and duplicate messages,
// and finally a table with the nr-bridge / baseline ratios. Profiles of the
// bridge under saturation go to the output directory.
//
//	go run ./cmd/nr-bench                       # every scenario, 15 s each
//	go run ./cmd/nr-bench -scenarios saturation,fixed5k -duration 10s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type scenario struct {
	name, desc string
	sim        []string // nr-sim flags
	commands   bool     // HTTP command load instead of events (nr-bridge only)
}

var scenarios = []scenario{
	{"saturation", "200 nodes, 8 conns x 64 in flight, as fast as possible",
		[]string{"-nodes", "200", "-conns", "8", "-inflight", "64", "-total-rate", "1000000"}, false},
	{"fixed5k", "100 nodes, 4 conns, fixed 5,000 msg/s",
		[]string{"-nodes", "100", "-conns", "4", "-inflight", "32", "-total-rate", "5000"}, false},
	{"conns64", "64 device connections, 2 in flight each, as fast as possible",
		[]string{"-nodes", "64", "-conns", "64", "-inflight", "2", "-total-rate", "1000000"}, false},
	{"nodes1000", "1,000 nodes on 1,000 connections, 1 msg/s each",
		[]string{"-nodes", "1000", "-conns", "1000", "-inflight", "1", "-rate", "1", "-connect-timeout", "60s"}, false},
	{"commands", "HTTP POST /org/demo/node/<n>/cmd to 100 nr-sim nodes: 32 keep-alive clients at saturation, then a fixed 1,000/s",
		[]string{"-nodes", "100", "-conns", "4", "-rate", "0"}, true},
}

type options struct {
	duration, warmup time.Duration
	out, repo, bin   string
	natsBin          string // "" = embedded (re-exec of nr-bench -natsd)
	bridgeEnv        []string
	targets          []string
	cmdClients       int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-natsd" {
		fs := flag.NewFlagSet("natsd", flag.ExitOnError)
		fs.Bool("natsd", true, "")
		port := fs.Int("port", 4222, "")
		dir := fs.String("dir", "", "")
		_ = fs.Parse(os.Args[1:])
		os.Exit(runNatsd(*port, *dir))
	}
	if len(os.Args) > 1 && os.Args[1] == "-kfaked" {
		fs := flag.NewFlagSet("kfaked", flag.ExitOnError)
		fs.Bool("kfaked", true, "")
		port := fs.Int("port", 9092, "")
		_ = fs.Parse(os.Args[1:])
		os.Exit(runKfaked(*port))
	}
	os.Exit(realMain())
}

func realMain() int {
	var o options
	sel := flag.String("scenarios", "all", "comma-separated: "+scenarioNames()+" (or all)")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "measured window per scenario and target")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before the window starts")
	flag.StringVar(&o.out, "out", "", "output directory (default ./bench-results/<timestamp>)")
	flag.StringVar(&o.natsBin, "nats-server", "", "nats-server binary to run, e.g. /usr/sbin/nats-server (default: the embedded nats-server of go.mod, in a child process)")
	env := flag.String("bridge-env", "", "extra environment for nr-bridge, comma-separated KEY=VALUE (e.g. MQTT_WORKERS=4)")
	tg := flag.String("targets", "baseline,nr-bridge", "which targets to run: baseline, nr-bridge, nr-bridge-kafka (BACKBONE=kafka against a kfake process, read from nr.events)")
	flag.IntVar(&o.cmdClients, "cmd-clients", 32, "keep-alive HTTP clients in the commands scenario")
	flag.Parse()
	if *env != "" {
		o.bridgeEnv = strings.Split(*env, ",")
	}
	o.targets = strings.Split(*tg, ",")
	var run []scenario
	for _, s := range scenarios {
		if *sel == "all" || contains(strings.Split(*sel, ","), s.name) {
			run = append(run, s)
		}
	}
	if len(run) == 0 {
		fmt.Fprintln(os.Stderr, "nr-bench: no scenario selected; choose from", scenarioNames())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var err error
	if o.repo, err = repoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "nr-bench:", err)
		return 1
	}
	if o.out == "" {
		o.out = filepath.Join(o.repo, "bench-results", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "nr-bench:", err)
		return 1
	}
	o.bin = filepath.Join(o.out, "bin")
	fmt.Fprintf(os.Stderr, "nr-bench: building into %s\n", o.bin)
	if err := goBuild(ctx, o.bin, "", map[string]string{
		"nr-bridge": "./cmd/nr-bridge", "nr-sim": "./cmd/nr-sim",
	}); err != nil {
		fmt.Fprintln(os.Stderr, "nr-bench:", err)
		return 1
	}
	stockMod, err := stockPahoModfile(ctx, o.repo, o.out)
	if err == nil {
		err = goBuild(ctx, o.bin, stockMod, map[string]string{"baseline": "./cmd/nr-bench/baseline"})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nr-bench: baseline:", err)
		return 1
	}
	natsVer := "v" + embeddedNatsVersion() + " (embedded, child process)"
	if o.natsBin != "" {
		b, _ := exec.Command(o.natsBin, "--version").Output()
		natsVer = strings.TrimSpace(string(b)) + " (" + o.natsBin + ")"
	}
	mv, _ := exec.Command("mosquitto", "-h").Output()
	mosqVer := strings.TrimSpace(strings.SplitN(string(mv), "\n", 2)[0])
	gv, _ := exec.Command("go", "version").Output()
	pv, _ := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/eclipse/paho.golang").Output()
	rep := newReport(os.Args, o, versions{
		NATSServer: natsVer, Mosquitto: mosqVer, Go: strings.TrimSpace(string(gv)),
		Paho: strings.TrimSpace(string(pv)), NRBridge: gitDescribe(o.repo),
	})
	header := fmt.Sprintf("nr-bench %s: %d cores; %s; nats-server %s; %s; baseline with paho.golang %s as released, nr-bridge with third_party/paho.golang; window %s after %s warmup; results in %s",
		time.Now().Format("2006-01-02 15:04"), numCPU(), mosqVer, natsVer, strings.TrimSpace(string(gv)), strings.TrimSpace(string(pv)), o.duration, o.warmup, o.out)
	fmt.Println(header)

	var results []result
	for _, sc := range run {
		for _, t := range o.targets {
			if sc.commands && t != "nr-bridge" {
				continue
			}
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(os.Stderr, "nr-bench: %s / %s ...\n", sc.name, t)
			r, err := runOne(ctx, o, sc, t)
			if err != nil {
				fmt.Fprintf(os.Stderr, "nr-bench: %s / %s: %v\n", sc.name, t, err)
				r.Error = err.Error()
			}
			r.print(os.Stdout)
			results = append(results, r)
		}
	}
	fmt.Println()
	fmt.Println(header)
	printTable(os.Stdout, results)
	printKafkaTable(os.Stdout, results)
	rep.Scenarios = results
	path, err := writeReport(o.out, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nr-bench:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "nr-bench: results in %s\n", path)
	return 0
}

// result is one scenario on one target.
type result struct {
	Scenario, Target string
	MsgPerSec        float64
	P50, P99, P999   time.Duration
	Samples          int
	CPUPerMsg        time.Duration // target's utime+stime / messages forwarded in the window
	CPUCores         float64       // target's CPU in cores during the window
	PeakRSS          int64
	Acked, Received  int64
	Lost, Dup        int64
	BrokerDropped    int // sessions whose queue Mosquitto logged as overflowing
	// commands scenario
	CmdSatPerSec             float64
	CmdSatP50, CmdSatP99     time.Duration
	CmdFixedPerSec           float64
	CmdFixedP50, CmdFixedP99 time.Duration
	CmdFailed                int64
	CmdCPUPerCmd             time.Duration
	Error                    string `json:",omitempty"` // why the run failed; its figures are then incomplete
}

func runOne(ctx context.Context, o options, sc scenario, target string) (r result, err error) {
	r = result{Scenario: sc.name, Target: target}
	dir, err := os.MkdirTemp("", "nr-bench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	logs := filepath.Join(o.out, "logs", sc.name+"-"+target)
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return r, err
	}
	mdir := filepath.Join(dir, "mosquitto")
	defer func() { r.BrokerDropped = brokerDropped(mdir, logs) }() // after the processes stopped
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(15 * time.Second)
		}
	}()

	// Mosquitto
	mport, err := freePort()
	if err != nil {
		return r, err
	}
	_ = os.MkdirAll(mdir, 0o755)
	conf, err := mosquittoConf(filepath.Join(o.repo, "deploy/mosquitto/mosquitto.conf"), mport, mdir)
	if err != nil {
		return r, err
	}
	mq, err := startProc("mosquitto", filepath.Join(logs, "mosquitto.out"), nil, "mosquitto", "-c", conf)
	if err != nil {
		return r, err
	}
	procs = append(procs, mq)
	// NATS
	nport, err := freePort()
	if err != nil {
		return r, err
	}
	ndir := filepath.Join(dir, "nats")
	var ns *proc
	if o.natsBin != "" {
		ns, err = startProc("nats-server", filepath.Join(logs, "nats.log"), nil, o.natsBin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(nport), "-sd", ndir)
	} else {
		self, _ := os.Executable()
		ns, err = startProc("nats-server", filepath.Join(logs, "nats.log"), nil, self, "-natsd", "-port", fmt.Sprint(nport), "-dir", ndir)
	}
	if err != nil {
		return r, err
	}
	procs = append(procs, ns)
	if err := waitPort(mport, mq, 10*time.Second); err != nil {
		return r, err
	}
	if err := waitPort(nport, ns, 20*time.Second); err != nil {
		return r, err
	}
	mqttURL := fmt.Sprintf("tcp://127.0.0.1:%d", mport)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", nport)

	// Target
	var tp *proc
	var httpBase, pprofBase string
	var kafkaBrokers string
	switch target {
	case "nr-bridge", "nr-bridge-kafka":
		hport, _ := freePort()
		pport, _ := freePort()
		httpBase = fmt.Sprintf("http://127.0.0.1:%d", hport)
		pprofBase = fmt.Sprintf("http://127.0.0.1:%d", pport)
		env := []string{"MQTT_URL=" + mqttURL, "NATS_URL=" + natsURL, "MQTT_CLIENT_ID=bench",
			fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", hport), fmt.Sprintf("PPROF_ADDR=127.0.0.1:%d", pport), "LOG_LEVEL=warn"}
		if target == "nr-bridge-kafka" {
			kport, err := freePort()
			if err != nil {
				return r, err
			}
			self, _ := os.Executable()
			kp, err := startProc("kfake", filepath.Join(logs, "kfake.log"), nil, self, "-kfaked", "-port", fmt.Sprint(kport))
			if err != nil {
				return r, err
			}
			procs = append(procs, kp)
			if err := waitPort(kport, kp, 20*time.Second); err != nil {
				return r, err
			}
			kafkaBrokers = fmt.Sprintf("127.0.0.1:%d", kport)
			env = append(env, "BACKBONE=kafka", "KAFKA_BROKERS="+kafkaBrokers)
		}
		env = append(env, o.bridgeEnv...)
		tp, err = startProc("nr-bridge", filepath.Join(logs, "nr-bridge.log"), env, filepath.Join(o.bin, "nr-bridge"))
		if err != nil {
			return r, err
		}
		procs = append(procs, tp)
		if err := waitHTTP(httpBase+"/readyz", tp, 30*time.Second); err != nil {
			return r, err
		}
	case "baseline":
		tp, err = startProc("baseline", filepath.Join(logs, "baseline.log"), nil, filepath.Join(o.bin, "baseline"), "-mqtt", mqttURL, "-nats", natsURL)
		if err != nil {
			return r, err
		}
		procs = append(procs, tp)
	default:
		return r, fmt.Errorf("unknown target %q", target)
	}

	var cons *consumer
	if kafkaBrokers != "" {
		cons, err = startKafkaConsumer(kafkaBrokers, "nr.events")
	} else {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		cons, err = startConsumer(cctx, natsURL, "NR_EVENTS")
		ccancel()
	}
	if err != nil {
		return r, fmt.Errorf("consumer: %w", err)
	}
	defer cons.close()
	if target == "baseline" {
		time.Sleep(time.Second) // its subscription, which has no readiness signal
	}

	// nr-sim
	simDur := o.warmup + o.duration + 2*time.Second
	if sc.commands {
		simDur = o.warmup + 2*o.duration + 5*time.Second
	}
	simArgs := append([]string{"-url", mqttURL, "-json", "-progress", "0", "-duration", simDur.String(), "-size", "256"}, sc.sim...)
	simOut := filepath.Join(logs, "nr-sim.json")
	sim, err := startSim(filepath.Join(o.bin, "nr-sim"), simArgs, simOut, filepath.Join(logs, "nr-sim.log"))
	if err != nil {
		return r, err
	}
	procs = append(procs, sim)

	if sc.commands {
		return runCommands(ctx, o, r, sim, tp, httpBase)
	}

	// Wait for the first event, then the warmup.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, d, _, _ := cons.snapshot(); d > 0 {
			break
		}
		if time.Now().After(deadline) || sim.exited() {
			return r, errors.New("no event reached NR_EVENTS")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sleep(ctx, o.warmup)
	t0 := time.Now()
	c0, _ := cpuTicks(tp.pid())
	_, d0, _, _ := cons.snapshot()
	cons.record(true)
	profDone := make(chan struct{})
	if sc.name == "saturation" && pprofBase != "" {
		go func() {
			defer close(profDone)
			secs := int((o.duration - time.Second) / time.Second)
			ch := make(chan struct{})
			go func() {
				defer close(ch)
				fetch(pprofBase+fmt.Sprintf("/debug/pprof/allocs?seconds=%d", secs), filepath.Join(o.out, "nr-bridge-saturation-allocs.pprof"))
			}()
			fetch(pprofBase+fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), filepath.Join(o.out, "nr-bridge-saturation-cpu.pprof"))
			<-ch
		}()
	} else {
		close(profDone)
	}
	sleep(ctx, o.duration)
	cons.record(false)
	c1, _ := cpuTicks(tp.pid())
	_, d1, _, _ := cons.snapshot()
	el := time.Since(t0)
	r.PeakRSS = peakRSS(tp.pid())
	n := d1 - d0
	r.MsgPerSec = float64(n) / el.Seconds()
	if n > 0 {
		r.CPUPerMsg = time.Duration(float64(c1-c0) / ticksPerSec * float64(time.Second) / float64(n))
	}
	r.CPUCores = float64(c1-c0) / ticksPerSec / el.Seconds()
	r.P50, r.P99, r.P999, r.Samples = cons.percentiles()
	<-profDone

	// Let nr-sim finish, then drain what the bridge still holds.
	<-sim.done
	acked, _ := readSimSummary(simOut)
	r.Acked = acked
	last, stall := int64(-1), time.Now()
	for time.Since(stall) < 10*time.Second {
		_, d, _, _ := cons.snapshot()
		if d >= acked {
			break
		}
		if d != last {
			last, stall = d, time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.Received, r.Lost, r.Dup = cons.tally(acked)
	if p := peakRSS(tp.pid()); p > r.PeakRSS {
		r.PeakRSS = p
	}
	return r, nil
}

func runCommands(ctx context.Context, o options, r result, sim, tp *proc, httpBase string) (result, error) {
	// nr-sim subscribes before it starts; give it the warmup.
	sleep(ctx, o.warmup)
	c0, _ := cpuTicks(tp.pid())
	sat := cmdLoad(ctx, httpBase, 100, o.cmdClients, 0, o.duration)
	c1, _ := cpuTicks(tp.pid())
	r.CmdSatPerSec = float64(sat.ok) / sat.elapsed.Seconds()
	r.CmdSatP50, r.CmdSatP99, _, _ = pcts(sat.lat)
	if sat.ok > 0 {
		r.CmdCPUPerCmd = time.Duration(float64(c1-c0) / ticksPerSec * float64(time.Second) / float64(sat.ok))
	}
	fixed := cmdLoad(ctx, httpBase, 100, 64, 1000, o.duration)
	r.CmdFixedPerSec = float64(fixed.ok) / fixed.elapsed.Seconds()
	r.CmdFixedP50, r.CmdFixedP99, _, _ = pcts(fixed.lat)
	r.CmdFailed = sat.failed + fixed.failed
	r.PeakRSS = peakRSS(tp.pid())
	if sat.firstErr != "" || fixed.firstErr != "" {
		fmt.Fprintf(os.Stderr, "nr-bench: commands: first error: %s %s\n", sat.firstErr, fixed.firstErr)
	}
	return r, nil
}

func startSim(bin string, args []string, out, logPath string) (*proc, error) {
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: "nr-sim", cmd: cmd, log: lf, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); lf.Close(); close(p.done) }()
	return p, nil
}

func readSimSummary(path string) (acked int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var s struct {
		Acked int64 `json:"events_acked"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return 0, fmt.Errorf("nr-sim summary %s: %w", path, err)
	}
	return s.Acked, nil
}

func fetch(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nr-bench: profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}

func scenarioNames() string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.name)
	}
	return strings.Join(n, ",")
}

func repoRoot() (string, error) {
	b, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("run nr-bench from the nr-bridge module: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
