// Package metrics defines every Prometheus series of nr-bridge on its own
// registry and serves them at GET /metrics. The series names are part of
// the contract (docs/contract.md, docs/operations.md "Metrics"): dashboards and alerts use
// them.
//
// Metrics implements bridge.Metrics, bridge.CommandMetrics and the HTTP
// counter the api package calls, so bridge and api stay free of a
// Prometheus dependency. Every labelled child the message path touches is
// created once in New; the hot path only increments cached counters.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// Namespace prefixes every series of the bridge.
const Namespace = "nr_bridge"

// Label values of the backbone label.
const (
	BackboneNATS  = "nats"
	BackboneKafka = "kafka"
)

// LatencyBuckets are the buckets (seconds) of the latency histograms: from
// a millisecond for a healthy local backbone up to five minutes, so the time
// messages waited through a backbone outage still lands in a bucket.
var LatencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// kinds are the message kinds, indexed by kindIndex.
var kinds = [...]bridge.Kind{bridge.KindEvents, bridge.KindReply}

func kindIndex(k bridge.Kind) int {
	if k == bridge.KindReply {
		return 1
	}
	return 0
}

// sources are the command sources the command series are created for.
var sources = []string{bridge.SourceHTTP, bridge.SourceStream}

// Metrics holds the registry and every series. Its methods are safe for
// concurrent use and never block.
type Metrics struct {
	reg *prometheus.Registry

	received     [len(kinds)]prometheus.Counter
	forwarded    [len(kinds)]prometheus.Counter
	writeErrors  prometheus.Counter
	writeRetries prometheus.Counter
	duplicates   prometheus.Counter
	acks         prometheus.Counter
	latency      prometheus.Observer
	deadLetters  map[string]prometheus.Counter // by reason, every one of bridge.Reasons
	dropped      *prometheus.CounterVec        // properties dropped, by reason
	droppedRes   prometheus.Counter            // its reason="reserved" child

	published      map[string]prometheus.Counter            // by source
	publishLatency map[string]prometheus.Observer           // by source
	refused        map[string]map[string]prometheus.Counter // by source, reason
	refusedVec     *prometheus.CounterVec
	publishedVec   *prometheus.CounterVec
	pubLatencyVec  *prometheus.HistogramVec

	mqttConnected *prometheus.GaugeVec
	inflight      *funcGauges
	oldest        *funcGauges
	starved       *prometheus.CounterVec // starve.go
	backboneCheck atomic.Pointer[func() error]
	httpRequests  *prometheus.CounterVec
	status        *statusSeries // commandstatus.go
}

// New creates the series on a fresh registry, with the Go runtime and
// process collectors. backbone (BackboneNATS or BackboneKafka) is the value
// of the backbone label; version goes into nr_bridge_build_info.
func New(backbone, version string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := factory{reg}
	m := &Metrics{reg: reg}

	build := f.gaugeVec("build_info", "Always 1; the labels say which version runs with which backbone.", "version", "backbone")
	build.WithLabelValues(version, backbone).Set(1)

	received := f.counterVec("messages_received_total", "Messages received from MQTT, by kind (events, reply).", "kind")
	forwarded := f.counterVec("messages_forwarded_total", "Messages written to the backbone and acknowledged by it, by kind and backbone. Dead letters are not counted here.", "kind", "backbone")
	for i, k := range kinds {
		m.received[i] = received.WithLabelValues(string(k))
		m.forwarded[i] = forwarded.WithLabelValues(string(k), backbone)
	}
	m.writeErrors = f.counterVec("write_errors_total", "Backbone writes that failed, each attempt counted.", "backbone").WithLabelValues(backbone)
	m.writeRetries = f.counterVec("write_retries_total", "Failed backbone writes scheduled for another attempt.", "backbone").WithLabelValues(backbone)
	m.duplicates = f.counterVec("duplicates_total", "Writes the backbone acknowledged as duplicates of a message it already stored (JetStream's PubAck duplicate flag, same Nats-Msg-Id within NATS_DUPLICATE_WINDOW), so it kept one copy: each is a redelivery the bridge wrote again. Always 0 on Kafka, whose idempotent producer drops its own retried batches silently and reports no duplicate; a redelivery there is written again.", "backbone").WithLabelValues(backbone)
	m.acks = f.counter("acks_sent_total", "MQTT messages acknowledged to the broker (PUBACK queued) after their backbone write.")
	m.latency = f.histogram("forward_latency_seconds", "Time from MQTT receipt to the backbone's acknowledgement of a forwarded message.")

	dl := f.counterVec("dead_letters_total", "Messages written to the dead-letter subject or topic, by reason.", "reason")
	m.deadLetters = make(map[string]prometheus.Counter, len(bridge.Reasons))
	for _, r := range bridge.Reasons {
		m.deadLetters[r] = dl.WithLabelValues(r)
	}

	m.dropped = f.counterVec("properties_dropped_total", "MQTT v5 user properties left out of the backbone headers, by reason (reserved: a name starting Nr- or Nats-, or Content-Type, any case).", "reason")
	m.droppedRes = m.dropped.WithLabelValues(bridge.DropReserved)

	m.publishedVec = f.counterVec("commands_published_total", "Commands published to MQTT and acknowledged by the broker, by source (http, stream).", "source")
	m.refusedVec = f.counterVec("commands_refused_total", "Commands not published, by source and reason.", "source", "reason")
	m.pubLatencyVec = f.histogramVec("command_publish_latency_seconds", "Time from the start of a command publish to the broker's PUBACK, by source.", "source")
	m.published = make(map[string]prometheus.Counter, len(sources))
	m.publishLatency = make(map[string]prometheus.Observer, len(sources))
	m.refused = make(map[string]map[string]prometheus.Counter, len(sources))
	for _, s := range sources {
		m.published[s] = m.publishedVec.WithLabelValues(s)
		m.publishLatency[s] = m.pubLatencyVec.WithLabelValues(s)
		m.refused[s] = make(map[string]prometheus.Counter, len(bridge.Reasons))
		for _, r := range bridge.Reasons {
			m.refused[s][r] = m.refusedVec.WithLabelValues(s, r)
		}
	}

	m.mqttConnected = f.gaugeVec("mqtt_connected", "1 while the MQTT connection (client ID) is up, else 0.", "connection")
	m.inflight = newFuncGauges(prometheus.BuildFQName(Namespace, "", "inflight_messages"),
		"Messages a worker received and has not acknowledged yet (waiting for the backbone).", "worker")
	reg.MustRegister(m.inflight)
	m.oldest = newFuncGauges(prometheus.BuildFQName(Namespace, "", "oldest_inflight_seconds"),
		"How long a worker's oldest un-acknowledged message has waited (0 when it holds none). PUBACKs go out in receive order: a value that keeps growing is a worker that cannot acknowledge anything (see MQTT_STALL_TIMEOUT).", "worker")
	reg.MustRegister(m.oldest)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "backbone_connected",
		Help:      "1 while the backbone connection (NATS or Kafka) is up, else 0.",
	}, m.backboneConnected))
	m.httpRequests = f.counterVec("http_requests_total", "HTTP requests served, by route pattern and status code.", "route", "code")
	m.status = newStatusSeries(f)
	m.starved = newStarvedSeries(f)
	return m
}

// Registry returns the registry, for tests and for extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (GET /metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// MessageReceived implements bridge.Metrics.
func (m *Metrics) MessageReceived(k bridge.Kind) { m.received[kindIndex(k)].Inc() }

// MessageForwarded implements bridge.Metrics.
func (m *Metrics) MessageForwarded(k bridge.Kind, latency time.Duration) {
	m.forwarded[kindIndex(k)].Inc()
	m.latency.Observe(latency.Seconds())
}

// WriteError implements bridge.Metrics.
func (m *Metrics) WriteError() { m.writeErrors.Inc() }

// WriteRetry implements bridge.Metrics.
func (m *Metrics) WriteRetry() { m.writeRetries.Inc() }

// Deduplicated implements bridge.Metrics.
func (m *Metrics) Deduplicated() { m.duplicates.Inc() }

// AckSent implements bridge.Metrics.
func (m *Metrics) AckSent() { m.acks.Inc() }

// DeadLettered implements bridge.Metrics; a reason outside bridge.Reasons
// is counted as bridge.ReasonOther.
func (m *Metrics) DeadLettered(reason string) {
	c, ok := m.deadLetters[reason]
	if !ok {
		c = m.deadLetters[bridge.ReasonOther]
	}
	c.Inc()
}

// MQTTConnected implements bridge.Metrics. It is called on connection
// changes only, so the label lookup is not on the message path.
func (m *Metrics) MQTTConnected(connection string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.mqttConnected.WithLabelValues(connection).Set(v)
}

// TrackInflight implements bridge.Metrics.
func (m *Metrics) TrackInflight(worker string, inflight func() int) {
	m.inflight.set(worker, func() float64 { return float64(inflight()) })
	m.starved.WithLabelValues(worker) // at 0 from the start, so increase() sees the first
}

// TrackOldestInflight implements bridge.Metrics.
func (m *Metrics) TrackOldestInflight(worker string, age func() time.Duration) {
	m.oldest.set(worker, func() float64 { return age().Seconds() })
}

// PropertiesDropped implements bridge.Metrics. It is called only for a
// message that had reserved properties.
func (m *Metrics) PropertiesDropped(reason string, n int) {
	if reason == bridge.DropReserved {
		m.droppedRes.Add(float64(n))
		return
	}
	m.dropped.WithLabelValues(reason).Add(float64(n))
}

// CommandPublished implements bridge.CommandMetrics.
func (m *Metrics) CommandPublished(source string, latency time.Duration) {
	c, ok := m.published[source]
	o := m.publishLatency[source]
	if !ok {
		c, o = m.publishedVec.WithLabelValues(source), m.pubLatencyVec.WithLabelValues(source)
	}
	c.Inc()
	o.Observe(latency.Seconds())
}

// CommandRefused implements bridge.CommandMetrics; a reason outside
// bridge.Reasons is counted as bridge.ReasonOther.
func (m *Metrics) CommandRefused(source, reason string) {
	byReason, ok := m.refused[source]
	if !ok {
		if !isReason(reason) {
			reason = bridge.ReasonOther
		}
		m.refusedVec.WithLabelValues(source, reason).Inc()
		return
	}
	c, ok := byReason[reason]
	if !ok {
		c = byReason[bridge.ReasonOther]
	}
	c.Inc()
}

// HTTPRequest counts one served request; route is the matched ServeMux
// pattern (a bounded set), code the status code.
func (m *Metrics) HTTPRequest(route string, code int) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// SetBackboneCheck sets the function nr_bridge_backbone_connected reads at
// each scrape: connected while it returns nil. Until it is set the gauge is
// 0. It is safe to call at any time (the backbone is opened after the HTTP
// server starts).
func (m *Metrics) SetBackboneCheck(ready func() error) { m.backboneCheck.Store(&ready) }

func (m *Metrics) backboneConnected() float64 {
	if f := m.backboneCheck.Load(); f != nil && *f != nil && (*f)() == nil {
		return 1
	}
	return 0
}

func isReason(r string) bool {
	for _, x := range bridge.Reasons {
		if x == r {
			return true
		}
	}
	return false
}

var (
	_ bridge.Metrics        = (*Metrics)(nil)
	_ bridge.CommandMetrics = (*Metrics)(nil)
)

// factory creates series with the namespace on one registry.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: LatencyBuckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: LatencyBuckets}, labels)
	f.reg.MustRegister(h)
	return h
}
