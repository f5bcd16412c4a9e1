package mqttconn

import (
	"fmt"
	"time"
)

// defaultReceiveMaximum is MQTT_RECEIVE_MAXIMUM's default: the largest
// value MQTT allows. Mochi v2.7.9 and Comqtt v2.6.0 stop sending to a
// client whose send quota reached 0 (docs/compatibility.md, "send-quota
// stall"); a quota that never runs out avoids that in most burst runs
// (issue 16: 3 of 4 runs passed with 65,535, none of 4 with 1,000), and the
// starvation watch of internal/ingest cures the rest. Brokers with their own in-flight
// limit (Mosquitto max_inflight_messages, gmqtt max_inflight) send no more
// than that limit whatever the client asks.
const defaultReceiveMaximum = 65535

// defaultStarveTimeout is MQTT_STARVE_TIMEOUT's default.
const defaultStarveTimeout = 5 * time.Second

// ReceiveMax is the Receive Maximum a worker advertises in CONNECT:
// MQTT_RECEIVE_MAXIMUM, or MQTT_MAX_INFLIGHT when it is 0.
func (c *Config) ReceiveMax() uint16 {
	if c.ReceiveMaximum > 0 {
		return uint16(min(c.ReceiveMaximum, 65535))
	}
	return uint16(min(c.MaxInflight, 65535))
}

// StarveAfter is MQTT_STARVE_TIMEOUT, or its default when it is 0.
func (c *Config) StarveAfter() time.Duration {
	if c.StarveTimeout > 0 {
		return c.StarveTimeout
	}
	return defaultStarveTimeout
}

// validateStarve checks MQTT_RECEIVE_MAXIMUM and MQTT_STARVE_TIMEOUT.
func (c *Config) validateStarve() error {
	if c.ReceiveMaximum < 0 || c.ReceiveMaximum > 65535 {
		return fmt.Errorf("MQTT_RECEIVE_MAXIMUM must be between 0 and 65535, got %d", c.ReceiveMaximum)
	}
	if c.StarveTimeout < 0 {
		return fmt.Errorf("MQTT_STARVE_TIMEOUT must be >= 0, got %s", c.StarveTimeout)
	}
	return nil
}
