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
//	scenario=<name> sent=N arrived=N lost=N duplicates=N deduplicated=N time=<dur> written-twice-bound=N (why)
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
// Every scenario also asserts how many events it may find written twice:
// duplicates (extra copies stored, counted by the ID in the payload; every
// fourth load event has no msg_id, so no backbone deduplicates it) plus
// deduplicated (the bridges' nr_bridge_duplicates_total: writes JetStream
// dropped as a repeated msg_id). That is 0 ("exactly once") unless the
// fault explains a bound, which the line states (write retries, agent
// re-publishes, messages the broker delivers again).
//
// TestMain then prints the results as a Markdown table. With
// FAULTS_RESULTS_DIR=<dir> (relative to the module root) it also writes
// them, with the date, machine, versions and command line, to
// <dir>/faults-<date>.json: the figures the docs quote are in
// docs/results/. With
// FAULTS_KEEP_LOGS=<dir> the log of every bridge of a failed scenario is
// also copied there. The soak test runs only with -soak set (not in CI):
//
//	go test -tags faults -count=1 -v -run Soak -timeout 2h ./internal/faults/ -soak=1h
package faults
