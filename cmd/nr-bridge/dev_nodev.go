//go:build nodev

package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
)

// Built with -tags nodev: the embedded MQTT broker and NATS server are left
// out of the binary (see dev.go); -dev is still parsed so that it fails with
// a clear message.

type devFlags struct{ enabled bool }

func addDevFlags(fs *flag.FlagSet) *devFlags {
	d := &devFlags{}
	fs.BoolVar(&d.enabled, "dev", false, "not available: this binary was built with -tags nodev")
	return d
}

func (d *devFlags) applyDefaults(map[string]string) {}

func runDev(context.Context, *Config, *devFlags, map[string]string, *slog.Logger) error {
	return errors.New("-dev: this binary was built with -tags nodev, without the embedded servers; use a default build (go run ./cmd/nr-bridge -dev)")
}
