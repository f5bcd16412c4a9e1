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
	fs.Usage = func() { printUsage(os.Stderr) }
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
	cfg, err := loadConfig(env.ToMap(os.Environ()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "nr-bridge: configuration:", err)
		return 2
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("nr-bridge stopped", "err", err)
		return 1
	}
	log.Info("nr-bridge stopped")
	return 0
}

// run starts every part, waits for ctx, then shuts down in order: HTTP
// intake, MQTT workers (finishing in-flight writes and acks), backbone.
func run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	log.Info("nr-bridge starting", append([]any{"version", version()}, cfg.logAttrs()...)...)

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
	handler := api.NewHandler(api.Deps{
		Log:   log,
		Ready: map[string]api.ReadyFunc{"mqtt": mqttReady, "backbone": backboneReady},
	})
	srv, err := api.Listen(cfg.HTTP.Addr, handler, log.With("component", "http"))
	if err != nil {
		return err
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve() }()

	bb, err := openBackbone(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return shutdownHTTP(srv, httpDone) // stopped while connecting
		}
		return errors.Join(err, shutdownHTTP(srv, httpDone))
	}
	backbonePtr.Store(&bb)
	receiver := bridge.NewReceiver(&cfg.MQTT, bb.Sink(), log)
	if err := receiver.Start(ctx); err != nil {
		return errors.Join(err, shutdownHTTP(srv, httpDone), bb.Close(ctx))
	}
	receiverPtr.Store(receiver)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	case runErr = <-httpDone:
		httpDone <- nil
	}

	// Shutdown order: HTTP intake, workers (finish in-flight writes and
	// acks, disconnect), then flush and close the backbone.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{runErr, shutdownHTTP(srv, httpDone)}
	errs = append(errs, receiver.Stop(sctx))
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
