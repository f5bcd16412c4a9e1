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
	"flag"
	"fmt"
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
