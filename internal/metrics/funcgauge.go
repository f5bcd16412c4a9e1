package metrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// funcGauges is a gauge family whose values are read from functions at
// collection time, one function per label value. It carries
// nr_bridge_inflight_messages{worker} and
// nr_bridge_oldest_inflight_seconds{worker}: both change with every
// message, and reading them only when Prometheus scrapes keeps the message
// path free of metric updates.
type funcGauges struct {
	desc *prometheus.Desc

	mu  sync.Mutex
	fns map[string]func() float64
}

func newFuncGauges(name, help, label string) *funcGauges {
	return &funcGauges{
		desc: prometheus.NewDesc(name, help, []string{label}, nil),
		fns:  make(map[string]func() float64),
	}
}

func (g *funcGauges) set(label string, f func() float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fns[label] = f
}

// Describe implements prometheus.Collector.
func (g *funcGauges) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector. The functions are called
// outside the lock, in label order.
func (g *funcGauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	labels := make([]string, 0, len(g.fns))
	fns := make([]func() float64, 0, len(g.fns))
	for l := range g.fns {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for _, l := range labels {
		fns = append(fns, g.fns[l])
	}
	g.mu.Unlock()
	for i, l := range labels {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, fns[i](), l)
	}
}
