// Package compat is nr-bridge's broker compatibility matrix, a test-only
// module so that the brokers it builds never enter the product's go.mod.
// TestMatrix builds Mosquitto's peers from the Go module proxy at pinned
// versions (gmqtt v0.5.0 cmd/gmqttd, Comqtt v2.6.0 cmd/single with memory
// storage, Mochi v2.7.9 cmd), takes Mosquitto from the system (apt), builds
// the nr-bridge and nr-sim binaries from the repository, and runs four
// scenarios per broker against a fresh broker, an in-process JetStream
// nats-server and the real nr-bridge binary with its default settings,
// counting events by nr-sim's msg_id (<run>.<org>.<node>.<seq>). It prints
// a table; docs/compatibility.md explains it.
//
// Run it from the repository root with
//
//	cd compat && go test -count=1 -v -timeout 60m .
//
// COMPAT_BROKERS (comma-separated names from the table) and
// COMPAT_SCENARIOS (steady, burst, restart, command) narrow a run;
// COMPAT_BRIDGE_ENV adds comma-separated KEY=VALUE settings to the
// bridge's environment (e.g. MQTT_RECEIVE_MAXIMUM=1000).
package compat
