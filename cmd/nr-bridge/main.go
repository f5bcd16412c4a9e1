// Command nr-bridge joins a fleet of MQTT agent nodes to NATS JetStream:
// events and replies are forwarded at-least-once, commands are published to
// the nodes by one validating publisher.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
)

// buildVersion is stamped at build time with -ldflags "-X main.buildVersion=...".
var buildVersion = ""

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func main() {
	os.Exit(realMain())
}

// realMain returns the exit code: 0 clean stop, 1 runtime failure, 2 bad
// usage or configuration.
func realMain() int {
	fs := flag.NewFlagSet("nr-bridge", flag.ContinueOnError)
	showVersion := fs.Bool("version", false, "print the version and exit")
	dev := addDevFlags(fs)
	fs.Usage = func() {
		printUsage(os.Stderr)
		fmt.Fprintln(os.Stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Println("nr-bridge", version())
		return 0
	}
	environ := env.ToMap(os.Environ())
	if dev.enabled {
		dev.applyDefaults(environ)
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		// The errors quote the bad value, which may be a URL with a password.
		fmt.Fprintln(os.Stderr, "nr-bridge: configuration:", bridge.RedactURLs(err.Error()))
		return 2
	}
	level, _ := parseLevel(cfg.LogLevel)
	// Every string and error of every log line, libraries' included, goes
	// through the one URL redaction (bridge.RedactURLs).
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: level, ReplaceAttr: bridge.RedactAttr}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if dev.enabled {
		err = runDev(ctx, cfg, dev, environ, log)
	} else {
		err = run(ctx, cfg, log)
	}
	if err != nil {
		log.Error("nr-bridge stopped", "err", err)
		return 1
	}
	log.Info("nr-bridge stopped")
	return 0
}

// run starts every part, waits for ctx, then shuts down in order: HTTP
// intake, commands source, MQTT workers (finishing in-flight writes and
// acks), command publisher, command tracking, backbone.
func run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	log.Info("nr-bridge starting", append([]any{"version", version()}, cfg.logAttrs()...)...)
	stopPprof, err := startPprof(cfg.PprofAddr, log)
	if err != nil {
		return err
	}
	defer stopPprof()

	// The token and certificate files are read before anything connects,
	// so a missing one fails at start naming its variable.
	auth, err := api.NewAuth(cfg.HTTP.Auth, cfg.MQTT.OrgID, log)
	if err != nil {
		return err
	}
	httpTLS, err := cfg.HTTP.TLS.Load()
	if err != nil {
		return err
	}
	m := metrics.New(cfg.Backbone, version())

	// The readiness checks run on HTTP goroutines while run still starts
	// the parts they look at.
	var backbonePtr atomic.Pointer[backbone]
	var receiverPtr atomic.Pointer[bridge.Receiver]
	backboneReady := func() error {
		if b := backbonePtr.Load(); b != nil {
			return (*b).Ready()
		}
		return errors.New("connecting")
	}
	mqttReady := func() error {
		if r := receiverPtr.Load(); r != nil {
			return r.Ready()
		}
		return errors.New("waiting for the backbone")
	}
	// The command routes need the publisher, so it connects first; it
	// reconnects on its own and refuses commands (503) until it is up.
	pub := bridge.NewPublisher(&cfg.MQTT, cfg.CommandLimits, log)
	// Command tracking records into the backbone's status store once it
	// is open (Attach below); until then commands go out untracked.
	tracker := bridge.NewTracker(cfg.Tracking, log, m)
	pub.Observe(tracker)
	pub.SetMetrics(m)
	if err := pub.Start(ctx); err != nil {
		return errors.Join(err, tracker.Close(ctx))
	}
	stopPublisher := func() error {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer pcancel()
		return errors.Join(pub.Stop(pctx), tracker.Close(pctx))
	}
	m.SetBackboneCheck(backboneReady)
	handler := api.NewHandler(api.Deps{
		Log:          log,
		Ready:        map[string]api.ReadyFunc{"mqtt": mqttReady, "publisher": pub.Ready, "backbone": backboneReady},
		Commands:     pub,
		OrgID:        cfg.MQTT.OrgID,
		MaxBodyBytes: cfg.HTTP.MaxBody,
		Auth:         auth,
		Metrics:      m,
		Statuses:     tracker,
	})
	srv, err := api.ListenTLS(cfg.HTTP.Addr, httpTLS, handler, log.With("component", "http"))
	if err != nil {
		return errors.Join(err, stopPublisher())
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve() }()

	bb, err := openBackbone(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return errors.Join(shutdownHTTP(srv, httpDone), stopPublisher()) // stopped while connecting
		}
		return errors.Join(err, shutdownHTTP(srv, httpDone), stopPublisher())
	}
	backbonePtr.Store(&bb)
	tracker.Attach(bb.StatusStore())
	receiver := bridge.NewReceiver(&cfg.MQTT, tracker.WrapSink(bb.Sink()), log, bridge.WithMetrics(m))
	if err := receiver.Start(ctx); err != nil {
		return errors.Join(err, shutdownHTTP(srv, httpDone), stopPublisher(), bb.Close(ctx))
	}
	receiverPtr.Store(receiver)
	if err := bb.StartCommands(ctx, pub); err != nil && ctx.Err() == nil {
		sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer scancel()
		return errors.Join(err, shutdownHTTP(srv, httpDone), receiver.Stop(sctx), stopPublisher(), bb.Close(sctx))
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	case runErr = <-httpDone:
		httpDone <- nil
	}

	// Shutdown order: HTTP intake, commands source (publish and ack what
	// it holds), workers (finish in-flight writes and acks, disconnect),
	// publisher (last PUBACKs, disconnect), tracking (last reply
	// statuses), then flush and close the backbone.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{runErr, shutdownHTTP(srv, httpDone)}
	errs = append(errs, bb.StopCommands(sctx))
	errs = append(errs, receiver.Stop(sctx))
	errs = append(errs, pub.Stop(sctx))
	errs = append(errs, tracker.Close(sctx)) // the last reply status updates, before the store closes
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	errs = append(errs, bb.Close(cctx))
	return errors.Join(errs...)
}

func shutdownHTTP(srv *api.Server, done chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(ctx)
	return errors.Join(err, <-done)
}
