package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// runNatsd is the -natsd child mode: an embedded nats-server (the version
// in go.mod) with JetStream on 127.0.0.1:port, store in dir, until SIGTERM.
// It runs as its own process so its CPU is not counted in nr-bench's.
func runNatsd(port int, dir string) int {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		return 1
	}
	s.ConfigureLogger()
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		fmt.Fprintln(os.Stderr, "natsd: not ready")
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}

// embeddedNatsVersion is the nats-server version compiled into nr-bench.
func embeddedNatsVersion() string { return server.VERSION }
