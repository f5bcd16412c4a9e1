//go:build !nodev

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/nr-bridge/nr-bridge/internal/devmode"
)

// devDefaults are the addresses -dev uses for the variables that are not
// set: loopback only, so a laptop does not expose an open broker.
var devDefaults = map[string]string{
	"MQTT_URL":      "tcp://127.0.0.1:1883",
	"NATS_URL":      "nats://127.0.0.1:4222",
	"KAFKA_BROKERS": "127.0.0.1:9092",
	"HTTP_ADDR":     "127.0.0.1:8080",
}

// devStopTimeout bounds stopping the embedded servers after the bridge.
const devStopTimeout = 15 * time.Second

// devStatsInterval is how often -dev looks at the stream message (or topic
// record) counts; it logs them when they changed.
const devStatsInterval = 10 * time.Second

// devFlags are the command-line flags of dev mode.
type devFlags struct {
	enabled bool
	dataDir string
}

// addDevFlags registers -dev and -dev-data on fs.
func addDevFlags(fs *flag.FlagSet) *devFlags {
	d := &devFlags{}
	fs.BoolVar(&d.enabled, "dev", false, "run an embedded MQTT broker and NATS server (JetStream), or with BACKBONE=kafka a Kafka broker (kfake), in this process and bridge them: try the bridge with nothing installed")
	fs.StringVar(&d.dataDir, "dev-data", "", "with -dev: JetStream data directory (default $DEV_DATA_DIR, else "+devmode.DefaultDataDir+")")
	return d
}

// applyDefaults sets the -dev addresses in environ for the variables that
// are unset or empty; variables set explicitly win.
func (d *devFlags) applyDefaults(environ map[string]string) {
	for k, v := range devDefaults {
		if environ[k] == "" {
			environ[k] = v
		}
	}
}

// runDev starts the embedded servers where MQTT_URL and NATS_URL (or, with
// BACKBONE=kafka, KAFKA_BROKERS) point, runs the bridge against them, and
// stops them after the bridge has shut down (on ctx's end, SIGTERM or
// SIGINT).
func runDev(ctx context.Context, cfg *Config, d *devFlags, environ map[string]string, log *slog.Logger) error {
	var dc devmode.Config
	if err := env.ParseWithOptions(&dc, env.Options{Environment: environ}); err != nil {
		return fmt.Errorf("dev mode: %w", err)
	}
	if d.dataDir != "" {
		dc.DataDir = d.dataDir
	}
	opts, err := devServerAddrs(cfg)
	if err != nil {
		return err
	}
	opts.DataDir, opts.Log = dc.DataDir, log
	// Every address, the HTTP one included (run binds it after the servers
	// started), is checked first: all clashes in one error, before
	// anything starts.
	addrs := []devmode.Addr{{Variable: "MQTT_URL", Addr: opts.MQTTAddr}}
	if opts.KafkaAddr != "" {
		addrs = append(addrs, devmode.Addr{Variable: "KAFKA_BROKERS", Addr: opts.KafkaAddr})
	} else {
		addrs = append(addrs, devmode.Addr{Variable: "NATS_URL", Addr: opts.NATSAddr})
	}
	addrs = append(addrs, devmode.Addr{Variable: "HTTP_ADDR", Addr: cfg.HTTP.Addr})
	if err := devmode.CheckAllFree(addrs...); err != nil {
		return err
	}

	srv, err := devmode.Start(ctx, opts)
	if err != nil {
		return err
	}
	urls := devURLs{
		mqtt: "tcp://" + srv.MQTTAddr(),
		http: "http://" + connectable(cfg.HTTP.Addr),
	}
	log.Info("dev: MQTT broker listening", "url", urls.mqtt, "broker", "mochi-mqtt (in memory)")
	if srv.KafkaAddr() != "" {
		urls.kafka = srv.KafkaAddr()
		log.Info("dev: Kafka broker listening", "brokers", urls.kafka, "broker", "kfake (in memory)")
	} else {
		urls.nats = "nats://" + srv.NATSAddr()
		log.Info("dev: NATS server listening", "url", urls.nats, "data_dir", dc.DataDir)
	}
	log.Info("dev: HTTP API listening", "url", urls.http)

	var wg sync.WaitGroup
	hctx, stopHelpers := context.WithCancel(ctx)
	wg.Go(func() { announceWhenReady(hctx, urls, dc.DataDir, log) })
	wg.Go(func() { logStreamCounts(hctx, srv, urls.kafka != "", log) })

	runErr := run(ctx, cfg, log)

	stopHelpers()
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), devStopTimeout)
	defer cancel()
	stopErr := srv.Stop(sctx)
	if stopErr == nil {
		log.Info("dev: embedded servers stopped")
	}
	return errors.Join(runErr, stopErr)
}

// devServerAddrs are the listen addresses of the embedded servers, from
// MQTT_URL and, by BACKBONE, NATS_URL or KAFKA_BROKERS (the first entry of
// the list each).
func devServerAddrs(cfg *Config) (devmode.Options, error) {
	var o devmode.Options
	var err error
	if o.MQTTAddr, err = devListenAddr("MQTT_URL", cfg.MQTT.URL, "1883", "tcp", "mqtt"); err != nil {
		return o, err
	}
	if cfg.Backbone == "kafka" {
		first, _, _ := strings.Cut(cfg.Kafka.Brokers, ",")
		o.KafkaAddr = strings.TrimSpace(first)
		if _, _, err := net.SplitHostPort(o.KafkaAddr); err != nil {
			o.KafkaAddr = net.JoinHostPort(o.KafkaAddr, "9092") // Kafka's default port, as clients assume
		}
		return o, nil
	}
	natsURL, _, _ := strings.Cut(cfg.NATS.URL, ",")
	o.NATSAddr, err = devListenAddr("NATS_URL", natsURL, "4222", "nats")
	return o, err
}

// devListenAddr turns a client URL (MQTT_URL, NATS_URL) into the host:port
// the embedded server listens on. Dev mode serves plain TCP only.
func devListenAddr(variable, raw, defaultPort string, schemes ...string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%s %q: want %s://host:port", variable, raw, schemes[0])
	}
	if !slices.Contains(schemes, strings.ToLower(u.Scheme)) {
		return "", fmt.Errorf("%s %q: -dev runs a plain TCP server: use %s://host:port", variable, raw, schemes[0])
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// connectable is a listen address as a client dials it: an empty or
// unspecified host becomes 127.0.0.1.
func connectable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// devURLs are where a user reaches the three parts; nats is empty with
// Kafka, kafka (host:port) with NATS.
type devURLs struct{ mqtt, nats, kafka, http string }

// tryCommands are copy-paste commands for the running dev bridge: publish
// an event, watch the backbone, send a command (issued now, valid an hour),
// and simulate a fleet against the dev broker.
func tryCommands(u devURLs, now time.Time) (pub, sub, cmd, sim string) {
	mq, _ := url.Parse(u.mqtt)
	pub = fmt.Sprintf(`mosquitto_pub -V mqttv5 -h %s -p %s -q 1 -t org/demo/node/n1/events -m '{"temp":21.5}'`, mq.Hostname(), mq.Port())
	if u.kafka != "" {
		sub = fmt.Sprintf(`kcat -b %s -q -G nr-watch -X auto.offset.reset=earliest -f '%%t %%k %%h %%s\n' nr.events nr.replies`, u.kafka)
	} else {
		sub = fmt.Sprintf(`nats --server %s sub 'nr.>'`, u.nats)
	}
	cmd = fmt.Sprintf(`curl -sS -X POST %s/org/demo/node/n1/cmd -H 'Content-Type: application/json' -d '{"type":"ping","version":1,"correlation_id":"demo-%d","issued_at":%d,"ttl_sec":3600,"payload":{}}'`,
		u.http, now.Unix(), now.Unix())
	sim = "go run ./cmd/nr-sim -nodes 100 -rate 10"
	if u.mqtt != devDefaults["MQTT_URL"] {
		sim += " -url " + u.mqtt
	}
	return pub, sub, cmd, sim
}

// announceWhenReady waits until /readyz answers 200, then logs the
// copy-paste commands and, when stderr is a terminal, prints a banner there.
func announceWhenReady(ctx context.Context, u devURLs, dataDir string, log *slog.Logger) {
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.http+"/readyz", nil)
		if err != nil {
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
	}
	pub, sub, cmd, sim := tryCommands(u, time.Now())
	log.Info("dev: ready; simulate a fleet with", "command", sim)
	log.Info("dev: publish an event with", "command", pub)
	log.Info("dev: watch events and replies with", "command", sub)
	log.Info("dev: send a command with", "command", cmd)
	if stderrIsTerminal() {
		backbone := fmt.Sprintf("NATS server  %s   (JetStream data in %s)", u.nats, dataDir)
		if u.kafka != "" {
			backbone = fmt.Sprintf("Kafka broker %s   (kfake, in memory)", u.kafka)
		}
		fmt.Fprintf(os.Stderr, `
  nr-bridge -dev is ready: broker, backbone and bridge run in this process (Ctrl-C stops all).
    MQTT broker  %s
    %s
    HTTP API     %s   (/healthz, /readyz)

  Simulate a fleet (in another terminal):  %s
  Publish one event:  %s
  Watch the stream:   %s
  Send a command:     %s

`, u.mqtt, backbone, u.http, sim, pub, sub, cmd)
	}
}

// stderrIsTerminal reports whether stderr is a character device (a
// terminal), without golang.org/x/term.
func stderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// logStreamCounts logs how many messages each JetStream stream holds (with
// Kafka: how many records each topic holds), looking every
// devStatsInterval and logging when the counts changed, so a newcomer sees
// events arriving without a client.
func logStreamCounts(ctx context.Context, srv *devmode.Servers, kafka bool, log *slog.Logger) {
	msg := "dev: stream messages"
	if kafka {
		msg = "dev: topic records"
	}
	tick := time.NewTicker(devStatsInterval)
	defer tick.Stop()
	var last map[string]uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, devStatsInterval/2)
		counts, err := srv.StreamMessages(cctx)
		cancel()
		if err != nil || maps.Equal(counts, last) {
			continue
		}
		last = counts
		attrs := make([]any, 0, 2*len(counts))
		for _, name := range slices.Sorted(maps.Keys(counts)) {
			attrs = append(attrs, name, counts[name])
		}
		log.Info(msg, attrs...)
	}
}
