// Package faults is nr-bridge's fault-injection, bad-input and soak suite.
//
// Its tests are behind the build tag faults, so that go test ./... stays
// fast; this file, without the tag, keeps the package buildable. Each
// scenario starts its own servers (Mosquitto processes with persistence,
// nats-server in-process or as the nats-server binary, kfake on a real
// port), runs the nr-bridge binary against them, sends events at a steady
// rate from many nodes while a fault happens, and counts by unique message
// ID what was sent (PUBACKed by the broker), what arrived in the backbone
// and how many duplicates. Every scenario prints one line:
//
//	scenario=<name> sent=N arrived=N lost=N duplicates=N time=<dur>
//
// and fails when lost is not 0 (except the scenario that shows the broker's
// own queue limit dropping messages, which expects a loss).
//
// Run it (about 5 minutes on 2 cores; needs the mosquitto and nats-server
// binaries):
//
//	go test -tags faults -count=1 -v -timeout 30m ./internal/faults/
//
// TestHostile (one line per case, hostile=<backbone>/<case> ...) and
// FuzzHostileEvent hold the bridge to its rules for hostile input from a
// node or a caller, on both backbones: see docs/hostile-input.md.
//
// TestMain then prints the results as a Markdown table. With
// FAULTS_KEEP_LOGS=<dir> the log of every bridge of a failed scenario is
// also copied there. The soak test runs only with -soak set (not in CI):
//
//	go test -tags faults -count=1 -v -run Soak -timeout 2h ./internal/faults/ -soak=1h
package faults
