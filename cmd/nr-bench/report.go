package main

import (
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"
)

func numCPU() int { return runtime.NumCPU() }

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func us(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f us", float64(d)/float64(time.Microsecond))
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

func (r result) print(w io.Writer) {
	if r.Error != "" {
		fmt.Fprintf(w, "%-10s %-9s ERROR %s\n", r.Scenario, r.Target, r.Error)
		return
	}
	if r.Scenario == "commands" {
		fmt.Fprintf(w, "%-10s %-9s saturation %.0f cmd/s p50 %s p99 %s, CPU/cmd %s; fixed 1000/s: %.0f cmd/s p50 %s p99 %s; failed %d; peak RSS %s\n",
			r.Scenario, r.Target, r.CmdSatPerSec, ms(r.CmdSatP50), ms(r.CmdSatP99), us(r.CmdCPUPerCmd),
			r.CmdFixedPerSec, ms(r.CmdFixedP50), ms(r.CmdFixedP99), r.CmdFailed, mb(r.PeakRSS))
		return
	}
	fmt.Fprintf(w, "%-10s %-9s %8.0f msg/s  p50 %s p99 %s p999 %s  CPU/msg %s (%.2f cores)  peak RSS %s  acked %d received %d lost %d dup %d%s\n",
		r.Scenario, r.Target, r.MsgPerSec, ms(r.P50), ms(r.P99), ms(r.P999), us(r.CPUPerMsg), r.CPUCores, mb(r.PeakRSS),
		r.Acked, r.Received, r.Lost, r.Dup, droppedNote(r))
}

// droppedNote says when the broker logged dropping messages, which is where
// a lost count comes from when the loader outpaces a target for long enough
// to fill a session's queue.
func droppedNote(r result) string {
	if r.BrokerDropped == 0 {
		return ""
	}
	return fmt.Sprintf(" (Mosquitto logged dropping for %d session(s): queue full)", r.BrokerDropped)
}

func lostDup(r result) string {
	s := fmt.Sprintf("%d / %d", r.Lost, r.Dup)
	if r.BrokerDropped > 0 {
		s += " (broker dropped)"
	}
	return s
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// printTable prints one row per scenario and measure: baseline, nr-bridge,
// and nr-bridge / baseline.
func printTable(w io.Writer, rs []result) {
	by := map[string]map[string]result{}
	var order []string
	for _, r := range rs {
		if by[r.Scenario] == nil {
			by[r.Scenario] = map[string]result{}
			order = append(order, r.Scenario)
		}
		by[r.Scenario][r.Target] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "scenario\tmeasure\tbaseline\tnr-bridge\tnr-bridge/baseline\t")
	for _, s := range order {
		b, n := by[s]["baseline"], by[s]["nr-bridge"]
		if s == "commands" {
			fmt.Fprintf(tw, "%s\tcmd/s (32 clients)\t-\t%.0f\t\t\n", s, n.CmdSatPerSec)
			fmt.Fprintf(tw, "%s\tp50 / p99 at saturation\t-\t%s / %s\t\t\n", s, ms(n.CmdSatP50), ms(n.CmdSatP99))
			fmt.Fprintf(tw, "%s\tCPU per command\t-\t%s\t\t\n", s, us(n.CmdCPUPerCmd))
			fmt.Fprintf(tw, "%s\tp50 / p99 at 1,000/s\t-\t%s / %s\t\t\n", s, ms(n.CmdFixedP50), ms(n.CmdFixedP99))
			fmt.Fprintf(tw, "%s\tfailed, peak RSS\t-\t%d, %s\t\t\n", s, n.CmdFailed, mb(n.PeakRSS))
			continue
		}
		row := func(m, bv, nv, rt string) { fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", s, m, bv, nv, rt) }
		row("msg/s", fmt.Sprintf("%.0f", b.MsgPerSec), fmt.Sprintf("%.0f", n.MsgPerSec), ratio(n.MsgPerSec, b.MsgPerSec))
		row("p50", ms(b.P50), ms(n.P50), ratio(float64(n.P50), float64(b.P50)))
		row("p99", ms(b.P99), ms(n.P99), ratio(float64(n.P99), float64(b.P99)))
		row("p99.9", ms(b.P999), ms(n.P999), ratio(float64(n.P999), float64(b.P999)))
		row("CPU per msg", us(b.CPUPerMsg), us(n.CPUPerMsg), ratio(float64(n.CPUPerMsg), float64(b.CPUPerMsg)))
		row("CPU cores", fmt.Sprintf("%.2f", b.CPUCores), fmt.Sprintf("%.2f", n.CPUCores), ratio(n.CPUCores, b.CPUCores))
		row("peak RSS", mb(b.PeakRSS), mb(n.PeakRSS), ratio(float64(n.PeakRSS), float64(b.PeakRSS)))
		row("lost / dup", lostDup(b), lostDup(n), "")
	}
	tw.Flush()
}

// printKafkaTable compares the bridge on its two backbones, for the
// scenarios run with both nr-bridge and nr-bridge-kafka: kfake is not a
// production broker, so only the bridge's own CPU ratio means much.
func printKafkaTable(w io.Writer, rs []result) {
	nats, kafka := map[string]result{}, map[string]result{}
	var order []string
	for _, r := range rs {
		switch r.Target {
		case "nr-bridge":
			nats[r.Scenario] = r
		case "nr-bridge-kafka":
			kafka[r.Scenario] = r
			order = append(order, r.Scenario)
		}
	}
	if len(order) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "scenario\tmeasure\tnr-bridge (NATS)\tnr-bridge (Kafka, kfake)\tKafka/NATS\t")
	for _, s := range order {
		n, k := nats[s], kafka[s]
		row := func(m, nv, kv, rt string) { fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", s, m, nv, kv, rt) }
		row("msg/s", fmt.Sprintf("%.0f", n.MsgPerSec), fmt.Sprintf("%.0f", k.MsgPerSec), ratio(k.MsgPerSec, n.MsgPerSec))
		row("CPU per msg", us(n.CPUPerMsg), us(k.CPUPerMsg), ratio(float64(k.CPUPerMsg), float64(n.CPUPerMsg)))
		row("peak RSS", mb(n.PeakRSS), mb(k.PeakRSS), ratio(float64(k.PeakRSS), float64(n.PeakRSS)))
		row("lost / dup", lostDup(n), lostDup(k), "")
	}
	tw.Flush()
}
