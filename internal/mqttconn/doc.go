// Package mqttconn is how the bridge connects to the MQTT broker: the MQTT
// configuration (MQTT_* variables, ORG_ID), the autopaho client
// configuration every connection shares (credentials, TLS, session,
// Receive Maximum, reconnect backoff), and the connection paho is given: a
// buffered one that coalesces PUBACKs into few writes, with TCP quick ACKs
// on Linux. The workers (internal/ingest) and the command publisher
// (internal/publisher) build their connections from it.
package mqttconn
