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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/redact"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
)

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
		fmt.Fprintln(os.Stderr, "nr-bridge: configuration:", redact.URLs(err.Error()))
		return 2
	}
	level, _ := parseLevel(cfg.LogLevel)
	// Every string and error of every log line, libraries' included, goes
	// through the one URL redaction (bridge.RedactURLs).
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: level, ReplaceAttr: redact.Attr}))

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

// run starts every part, waits for ctx, then shuts down in order (see
// shutdown): HTTP intake, the commands source and the MQTT workers
// (finishing in-flight writes and acks) in parallel, command publisher,
// command tracking, backbone, each within its share of SHUTDOWN_TIMEOUT.
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
	var receiverPtr atomic.Pointer[ingest.Receiver]
	var backboneProgress atomic.Pointer[func() error] // why it is not open yet
	backboneReady := func() error {
		if b := backbonePtr.Load(); b != nil {
			return (*b).Ready()
		}
		if why := backboneProgress.Load(); why != nil {
			return (*why)()
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
	pub := publisher.New(&cfg.MQTT, log, m)
	// Command tracking records into the backbone's status store once it
	// is open (Attach below); until then commands go out untracked.
	tr := tracker.New(cfg.Tracking, log, m)
	pub.Observe(tr)
	if err := tr.Start(ctx); err != nil {
		return err
	}
	if err := pub.Start(ctx); err != nil {
		return errors.Join(err, tr.Close(ctx))
	}
	intake := bridge.NewIntake(pub, cfg.CommandLimits, cfg.MQTT.OrgID, m)
	stopPublisher := func() error {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer pcancel()
		return errors.Join(pub.Close(pctx), tr.Close(pctx))
	}
	m.SetBackboneCheck(backboneReady)
	lister, console := newConsole(&backbonePtr, m, cfg, log)
	handler := api.NewHandler(api.Deps{
		Log:          log,
		Ready:        map[string]api.ReadyFunc{"mqtt": mqttReady, "publisher": pub.Ready, "backbone": backboneReady},
		Commands:     intake,
		MaxBodyBytes: cfg.HTTP.MaxBody,
		MaxWaits:     cfg.HTTP.MaxWaits,
		Auth:         auth,
		Metrics:      m,
		Statuses:     tr,
		Lister:       lister,
		Console:      console,
	})
	srv, err := api.ListenTLS(cfg.HTTP.Addr, httpTLS, handler, log.With("component", "http"))
	if err != nil {
		return errors.Join(err, stopPublisher())
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve() }()

	bb, err := openBackbone(ctx, cfg, log, m, &backboneProgress)
	if err != nil {
		if ctx.Err() != nil {
			return errors.Join(stopHTTP(cfg, srv, httpDone), stopPublisher()) // stopped while connecting
		}
		return errors.Join(err, stopHTTP(cfg, srv, httpDone), stopPublisher())
	}
	backbonePtr.Store(&bb)
	tr.Attach(bb.StatusStore())
	receiver := ingest.NewReceiver(&cfg.MQTT, tr.WrapSink(bb.Sink()), log, m)
	if err := receiver.Start(ctx); err != nil {
		return errors.Join(err, stopHTTP(cfg, srv, httpDone), stopPublisher(), bb.Close(ctx))
	}
	receiverPtr.Store(receiver)
	if err := bb.StartCommands(ctx, intake, pub.ClientID()); err != nil && ctx.Err() == nil {
		sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer scancel()
		return errors.Join(err, stopHTTP(cfg, srv, httpDone), receiver.Close(sctx), stopPublisher(), bb.Close(sctx))
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	case runErr = <-httpDone:
		httpDone <- nil
	}
	return errors.Join(runErr, shutdown(cfg, log, srv, httpDone, bb, receiver, pub, tr))
}

// shutdown stops every part in order, each stage within its own share of
// SHUTDOWN_TIMEOUT (shutdown.go): HTTP intake; then the commands source
// (publish and ack what it holds) and the workers (finish in-flight writes
// and acks, disconnect) in parallel; the publisher (last PUBACKs,
// disconnect); tracking (last reply statuses, before the store closes);
// then flush and close the backbone. A stage that runs out of its share
// says so itself (a worker: how many messages it left un-acked for
// redelivery), and the later stages still get theirs.
func shutdown(cfg *Config, log *slog.Logger, srv *api.Server, httpDone chan error, bb backbone,
	receiver *ingest.Receiver, pub *publisher.Publisher, tr *tracker.Tracker) error {
	plan := newShutdownPlan(cfg.ShutdownTimeout)
	hctx, hcancel := plan.stage(shareHTTP, 100-shareHTTP)
	defer hcancel()
	errs := []error{shutdownHTTP(hctx, srv, httpDone)}

	wend := plan.deadline(shareWorkers, sharePublisher+shareTracker+shareBackbone)
	wctx, wcancel := context.WithDeadline(context.Background(), wend)
	defer wcancel()
	cend := wend.Add(-commandsStopGrace)
	if left := time.Until(wend); left < 2*commandsStopGrace {
		cend = wend.Add(-left / 2)
	}
	cctx, ccancel := context.WithDeadline(context.Background(), cend)
	defer ccancel()
	var cmdErr error
	cmdDone := make(chan struct{})
	go func() {
		defer close(cmdDone)
		cmdErr = bb.StopCommands(cctx)
	}()
	errs = append(errs, receiver.Close(wctx))
	<-cmdDone
	errs = append(errs, cmdErr)
	// Writes still pending in the backbone belong to messages the workers
	// left un-acked (the worker logged them): the broker redelivers them.
	abandoned := 0
	for _, w := range receiver.Workers() {
		abandoned += w.Inflight()
	}

	pctx, pcancel := plan.stage(sharePublisher, shareTracker+shareBackbone)
	defer pcancel()
	errs = append(errs, pub.Close(pctx))
	tctx, tcancel := plan.stage(shareTracker, shareBackbone)
	defer tcancel()
	errs = append(errs, tr.Close(tctx)) // the last reply status updates, before the store closes
	bctx, bcancel := plan.stage(shareBackbone, 0)
	defer bcancel()
	err := bb.Close(bctx)
	if err != nil && abandoned > 0 && bctx.Err() != nil {
		// The same stuck writes again, not a second failure.
		log.Debug("backbone closed with writes unconfirmed; their messages were left un-acked for redelivery", "writes", abandoned, "err", err)
		err = nil
	}
	return errors.Join(append(errs, err)...)
}

// shutdownHTTP stops the HTTP server: no new requests, ?wait requests
// answer at once, the others may finish until ctx ends; what is left then
// is cut.
func shutdownHTTP(ctx context.Context, srv *api.Server, done chan error) error {
	err := srv.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("HTTP requests still in progress at the end of their share of SHUTDOWN_TIMEOUT were cut: %w", errors.Join(err, srv.Close()))
	}
	return errors.Join(err, <-done)
}

// stopHTTP is shutdownHTTP with the HTTP share of SHUTDOWN_TIMEOUT, for
// the paths where run gives up while starting.
func stopHTTP(cfg *Config, srv *api.Server, done chan error) error {
	ctx, cancel := newShutdownPlan(cfg.ShutdownTimeout).stage(shareHTTP, 100-shareHTTP)
	defer cancel()
	return shutdownHTTP(ctx, srv, done)
}
