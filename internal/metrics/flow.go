package metrics

import (
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// FlowWindow is how far back a FlowReport's history reaches.
const FlowWindow = 5 * time.Minute

// flowMinStep is the shortest interval a rate is computed over: reports
// asked for more often (several console tabs) share a sample.
const flowMinStep = 900 * time.Millisecond

// FlowRates are messages per second over one interval.
type FlowRates struct {
	// At is the end of the interval.
	At          time.Time `json:"t"`
	Events      float64   `json:"events"`
	Replies     float64   `json:"replies"`
	Commands    float64   `json:"commands"`
	DeadLetters float64   `json:"dead_letters"`
}

// FlowTotals are the counters the rates are computed from, since start:
// events and replies written to the backbone
// (nr_bridge_messages_forwarded_total), commands published
// (nr_bridge_commands_published_total) and dead letters
// (nr_bridge_dead_letters_total).
type FlowTotals struct {
	Events      float64 `json:"events"`
	Replies     float64 `json:"replies"`
	Commands    float64 `json:"commands"`
	DeadLetters float64 `json:"dead_letters"`
}

// MQTTConnection is one MQTT connection's state
// (nr_bridge_mqtt_connected): a worker's or the publisher's client ID.
type MQTTConnection struct {
	ClientID string `json:"client_id"`
	Up       bool   `json:"up"`
}

// FlowReport is what the console's flow panel shows.
type FlowReport struct {
	Rates  FlowRates  `json:"rates"`
	Totals FlowTotals `json:"totals"`
	// Inflight is the messages the workers received and have not
	// acknowledged yet (nr_bridge_inflight_messages, summed).
	Inflight    int              `json:"inflight"`
	Connections []MQTTConnection `json:"mqtt_connections"`
	// History are the rates of the last FlowWindow, oldest first, one
	// point per report asked for (about one a second while a console is
	// open; none while nobody looks).
	History []FlowRates `json:"history"`
}

type flowSample struct {
	at time.Time
	t  FlowTotals
}

// Flow computes FlowReports from the counters of a Metrics. It samples
// the counters only when a report is asked for, so it needs no goroutine;
// it is safe for concurrent use.
type Flow struct {
	m       *Metrics
	mu      sync.Mutex
	samples []flowSample // oldest first, at least flowMinStep apart
}

// NewFlow returns the flow of m's counters.
func NewFlow(m *Metrics) *Flow { return &Flow{m: m} }

// Report reads the counters and returns the rates since the newest sample
// at least flowMinStep old (zero rates on the first call), with the
// history of the last FlowWindow.
func (f *Flow) Report(now time.Time) FlowReport {
	totals, inflight, conns := f.m.flowCounters()
	rep := FlowReport{Totals: totals, Inflight: inflight, Connections: conns, Rates: FlowRates{At: now.UTC()}}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.samples) - 1; i >= 0; i-- {
		if s := f.samples[i]; now.Sub(s.at) >= flowMinStep {
			rep.Rates = rates(s, flowSample{now, totals})
			break
		}
	}
	if n := len(f.samples); n == 0 || now.Sub(f.samples[n-1].at) >= flowMinStep {
		f.samples = append(f.samples, flowSample{now, totals})
	}
	drop := 0
	for drop < len(f.samples)-1 && now.Sub(f.samples[drop].at) > FlowWindow {
		drop++
	}
	f.samples = f.samples[drop:]
	rep.History = make([]FlowRates, 0, len(f.samples))
	for i := 1; i < len(f.samples); i++ {
		rep.History = append(rep.History, rates(f.samples[i-1], f.samples[i]))
	}
	return rep
}

// rates are the per-second increases from a to b; a counter that went
// down (a restart of the bridge) counts from zero.
func rates(a, b flowSample) FlowRates {
	dt := b.at.Sub(a.at).Seconds()
	r := func(x, y float64) float64 {
		if y < x {
			x = 0
		}
		return (y - x) / dt
	}
	return FlowRates{
		At:          b.at.UTC(),
		Events:      r(a.t.Events, b.t.Events),
		Replies:     r(a.t.Replies, b.t.Replies),
		Commands:    r(a.t.Commands, b.t.Commands),
		DeadLetters: r(a.t.DeadLetters, b.t.DeadLetters),
	}
}

// flowCounters reads the series a FlowReport needs from the registry
// (the same values /metrics serves).
func (m *Metrics) flowCounters() (FlowTotals, int, []MQTTConnection) {
	var t FlowTotals
	inflight := 0
	conns := []MQTTConnection{}
	fams, _ := m.reg.Gather() // a partial result still has the bridge's own series
	label := func(mt *dto.Metric, name string) string {
		for _, l := range mt.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	for _, fam := range fams {
		for _, mt := range fam.GetMetric() {
			c, g := mt.GetCounter().GetValue(), mt.GetGauge().GetValue()
			switch fam.GetName() {
			case Namespace + "_messages_forwarded_total":
				if label(mt, "kind") == "reply" {
					t.Replies += c
				} else {
					t.Events += c
				}
			case Namespace + "_commands_published_total":
				t.Commands += c
			case Namespace + "_dead_letters_total":
				t.DeadLetters += c
			case Namespace + "_inflight_messages":
				inflight += int(g)
			case Namespace + "_mqtt_connected":
				conns = append(conns, MQTTConnection{ClientID: label(mt, "connection"), Up: g == 1})
			}
		}
	}
	sort.Slice(conns, func(i, j int) bool { return conns[i].ClientID < conns[j].ClientID })
	return t, inflight, conns
}
