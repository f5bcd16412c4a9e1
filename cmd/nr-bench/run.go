package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

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
