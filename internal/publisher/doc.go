// Package publisher is the single validating publisher: the only code that
// publishes commands to MQTT, on its own connection. It implements
// bridge.Publisher; every command reaches it through bridge.Intake,
// whatever its source, and it checks the target, the ORG_ID scope and the
// remaining TTL once more right before the command goes out at QoS 1.
package publisher
