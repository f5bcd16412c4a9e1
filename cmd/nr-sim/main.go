// Command nr-sim simulates a fleet of agent nodes against an MQTT v5 broker:
// nodes publish JSON events at a paced rate and answer the commands sent to
// them. It is the quick-start companion of `nr-bridge -dev` and the
// project's load generator. The engine is package internal/sim.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/redact"
	"github.com/nr-bridge/nr-bridge/internal/sim"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// options are the flags that shape the output rather than the fleet.
type options struct {
	json    bool
	urlFrom string // where the broker URL came from: -url, MQTT_URL or default
}

// parseFlags turns the command line into a sim.Config. getenv supplies the
// bridge's variables as defaults, so nr-sim reaches the broker the bridge
// uses without repeating it: MQTT_URL for -url, MQTT_USERNAME and
// MQTT_PASSWORD for -username and -password (a password need not appear in
// the process list; user:password@ in the URL works too), and for a TLS URL
// MQTT_CA_FILE, MQTT_CERT_FILE and MQTT_KEY_FILE.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (sim.Config, options, error) {
	cfg := sim.DefaultConfig()
	var opts options
	opts.urlFrom = "default"
	if u := strings.TrimSpace(getenv("MQTT_URL")); u != "" {
		cfg.URL, opts.urlFrom = u, "MQTT_URL"
	}
	fs := flag.NewFlagSet("nr-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "nr-sim: simulate a fleet of MQTT v5 agent nodes (events at a paced rate, answers to commands).\n\nUsage: nr-sim [flags]\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.URL, "url", cfg.URL, "broker URL: tcp:// (mqtt://) or ssl:// (tls://, mqtts://); default $MQTT_URL, else "+sim.DefaultConfig().URL)
	fs.StringVar(&cfg.Username, "username", getenv("MQTT_USERNAME"), "MQTT username (default $MQTT_USERNAME)")
	fs.StringVar(&cfg.Password, "password", getenv("MQTT_PASSWORD"), "MQTT password (default $MQTT_PASSWORD)")
	fs.IntVar(&cfg.Orgs, "orgs", cfg.Orgs, "number of organizations, named <org-prefix>, <org-prefix>2, ...")
	fs.StringVar(&cfg.OrgPrefix, "org-prefix", cfg.OrgPrefix, "name of the first org and prefix of the others")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "total number of nodes across all orgs (not per org), spread evenly; each org's nodes are n1, n2, ...")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "events per second per node (fractions allowed; 0 = no events, only answer commands)")
	totalRate := fs.Float64("total-rate", 0, "events per second across the fleet, instead of -rate (sets -rate to total/nodes)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "approximate event payload size in bytes (JSON padded up to it)")
	qos := fs.Int("qos", int(cfg.QoS), "QoS of events and replies: 0 or 1")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to run (0 = until Ctrl-C, or until -count is done); with -count, nodes stop sending after -count events and keep answering commands until -duration")
	fs.IntVar(&cfg.Count, "count", cfg.Count, "events per node, then stop sending (0 = no limit); without -duration nr-sim exits once all are acknowledged")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "MQTT connections; nodes are spread over them round-robin")
	fs.IntVar(&cfg.Inflight, "inflight", cfg.Inflight, "publishes in flight per connection (the broker's Receive Maximum also limits it)")
	fs.Float64Var(&cfg.ReplyFraction, "reply-fraction", cfg.ReplyFraction, "fraction of nodes (0..1) that answer commands; the rest stay silent like offline agents")
	fs.StringVar(&cfg.RunID, "run-id", "", "prefix of every msg_id, <run-id>.<org>.<node>.<seq> (default random)")
	fs.StringVar(&cfg.ClientPrefix, "client-prefix", "", "MQTT client ID prefix, <prefix>-<k> (default nr-sim-<run-id>)")
	fs.DurationVar(&cfg.Progress, "progress", cfg.Progress, "interval of the progress line (0 = none)")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", cfg.PublishTimeout, "how long a publish waits for its PUBACK")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "how long to wait for the whole fleet to connect and subscribe")
	fs.BoolVar(&opts.json, "json", false, "logs as JSON on stderr and the summary as one JSON object on stdout")
	if err := fs.Parse(args); err != nil {
		return cfg, opts, err
	}
	if fs.NArg() > 0 {
		return cfg, opts, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["total-rate"] {
		if set["rate"] {
			return cfg, opts, errors.New("-rate and -total-rate are alternatives: give one")
		}
		if *totalRate < 0 || cfg.Nodes < 1 {
			return cfg, opts, fmt.Errorf("-total-rate must be >= 0, got %v", *totalRate)
		}
		cfg.Rate = *totalRate / float64(cfg.Nodes)
	}
	if *qos != 0 && *qos != 1 {
		return cfg, opts, fmt.Errorf("-qos must be 0 or 1, got %d", *qos)
	}
	cfg.QoS = byte(*qos)
	if set["url"] {
		opts.urlFrom = "-url"
	}
	if err := brokerAuth(&cfg, getenv); err != nil {
		return cfg, opts, err
	}
	return cfg, opts, nil
}

// brokerAuth takes user:password@ out of the URL into the CONNECT
// credentials (unless -username, -password or their variables gave them)
// and loads the MQTT_*_FILE TLS files for a TLS URL.
func brokerAuth(cfg *sim.Config, getenv func(string) string) error {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil // sim.Run reports a bad URL, naming -url
	}
	if u.User != nil {
		if cfg.Username == "" {
			cfg.Username = u.User.Username()
		}
		if p, ok := u.User.Password(); ok && cfg.Password == "" {
			cfg.Password = p
		}
		u.User = nil
		cfg.URL = u.String()
	}
	mc := mqttconn.Config{URL: cfg.URL, CAFile: getenv("MQTT_CA_FILE"), CertFile: getenv("MQTT_CERT_FILE"), KeyFile: getenv("MQTT_KEY_FILE")}
	tlsCfg, err := mc.TLSConfig()
	if err != nil {
		return err
	}
	cfg.TLS = tlsCfg
	return nil
}

// realMain returns the exit code: 0 after a run (check the failed counts in
// the summary), 1 when the fleet could not connect, 2 for bad flags.
func realMain(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, opts, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nr-sim:", err)
		return 2
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if opts.json {
		h = slog.NewJSONHandler(stderr, nil)
	}
	cfg.Logger = slog.New(h)
	cfg.Logger.Info("connecting to the broker", "url", redact.URLs(cfg.URL), "from", opts.urlFrom)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := sim.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "nr-sim:", err)
		if errors.Is(err, sim.ErrConfig) {
			return 2
		}
		return 1
	}
	if opts.json {
		writeJSONSummary(stdout, s)
	} else {
		writeTextSummary(stdout, s)
	}
	return 0
}

func writeTextSummary(w io.Writer, s sim.Summary) {
	l := s.Latency
	fmt.Fprintf(w, "nr-sim summary (run %s): %d nodes on %d connections, sending for %s\n", s.RunID, s.Nodes, s.Conns, s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  events    sent %d  acknowledged %d  failed %d  rate %.1f/s\n", s.EventsSent, s.EventsAcked, s.EventsFailed, s.Rate)
	if l.Count == 0 {
		fmt.Fprintf(w, "  latency   n/a (measured publish to PUBACK, QoS 1 only)\n")
	} else {
		fmt.Fprintf(w, "  latency   p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (publish to PUBACK, %d samples)\n",
			round(l.P50), round(l.P90), round(l.P99), round(l.P999), round(l.Max), l.Count)
	}
	fmt.Fprintf(w, "  commands  received %d  replies sent %d  reply errors %d\n", s.CommandsReceived, s.RepliesSent, s.ReplyErrors)
}

// round keeps three significant digits or so.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// jsonSummary is the -json summary; durations in milliseconds.
type jsonSummary struct {
	RunID            string      `json:"run_id"`
	Nodes            int         `json:"nodes"`
	Conns            int         `json:"conns"`
	ElapsedSec       float64     `json:"elapsed_s"`
	EventsSent       uint64      `json:"events_sent"`
	EventsAcked      uint64      `json:"events_acked"`
	EventsFailed     uint64      `json:"events_failed"`
	RatePerSec       float64     `json:"rate_per_s"`
	CommandsReceived uint64      `json:"commands_received"`
	RepliesSent      uint64      `json:"replies_sent"`
	ReplyErrors      uint64      `json:"reply_errors"`
	LatencyMS        jsonLatency `json:"latency_ms"`
}

type jsonLatency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func writeJSONSummary(w io.Writer, s sim.Summary) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b, _ := json.Marshal(jsonSummary{
		RunID: s.RunID, Nodes: s.Nodes, Conns: s.Conns, ElapsedSec: s.Elapsed.Seconds(),
		EventsSent: s.EventsSent, EventsAcked: s.EventsAcked, EventsFailed: s.EventsFailed, RatePerSec: s.Rate,
		CommandsReceived: s.CommandsReceived, RepliesSent: s.RepliesSent, ReplyErrors: s.ReplyErrors,
		LatencyMS: jsonLatency{Count: s.Latency.Count, P50: ms(s.Latency.P50), P90: ms(s.Latency.P90),
			P99: ms(s.Latency.P99), P999: ms(s.Latency.P999), Max: ms(s.Latency.Max)},
	})
	fmt.Fprintln(w, string(b))
}
