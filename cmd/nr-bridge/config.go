package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/kafkastatus"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/redact"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
	kafkasource "github.com/nr-bridge/nr-bridge/sources/kafka"
	cmdnatsjs "github.com/nr-bridge/nr-bridge/sources/natsjs"
)

// Config is the whole bridge configuration, composed from each component's
// own Config. Every field has an env tag; -h prints them all.
type Config struct {
	Backbone        string        `env:"BACKBONE" envDefault:"nats" desc:"where events and replies go: nats or kafka"`
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info" desc:"debug, info, warn or error"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s" desc:"bound on finishing in-flight work at SIGTERM"`
	PprofAddr       string        `env:"PPROF_ADDR" desc:"opt-in: serve net/http/pprof on this address (e.g. 127.0.0.1:6060), on its own listener without auth; unset = off"`

	MQTT      mqttconn.Config
	HTTP      api.Config
	NATS      natsconn.Config
	JetStream natsjs.Config

	CommandLimits bridge.CommandLimits
	NATSCommands  cmdnatsjs.Config

	Kafka         kafkaconn.Config
	KafkaSink     kafkasink.Config
	KafkaCommands kafkasource.Config

	// Command tracking (docs/contract.md "Command tracking").
	Tracking    tracker.Config
	NATSStatus  natsstatus.Config
	KafkaStatus kafkastatus.Config
}

// loadConfig parses environ (KEY=VALUE pairs); errors name the variable.
func loadConfig(environ map[string]string) (*Config, error) {
	var cfg Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		return nil, explainEnvError(err)
	}
	if cfg.MQTT.ClientID == "" {
		cfg.MQTT.ClientID = mqttconn.DefaultClientID()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate checks cross-field rules of every component.
func (c *Config) Validate() error {
	switch c.Backbone {
	case "nats":
	case "kafka":
	default:
		return fmt.Errorf("BACKBONE %q: want nats or kafka", c.Backbone)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("SHUTDOWN_TIMEOUT must be > 0, got %s", c.ShutdownTimeout)
	}
	if err := c.MQTT.Validate(); err != nil {
		return err
	}
	if c.Backbone == "nats" {
		if err := c.NATS.Validate(); err != nil {
			return err
		}
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if err := c.CommandLimits.Validate(); err != nil {
		return err
	}
	if err := c.Tracking.Validate(); err != nil {
		return err
	}
	if c.Backbone == "nats" {
		if err := c.NATSStatus.Validate(); err != nil {
			return err
		}
	}
	if c.Backbone == "kafka" {
		if err := c.KafkaStatus.Validate(c.Kafka); err != nil {
			return err
		}
	}
	if c.Backbone == "nats" {
		if err := c.NATSCommands.Validate(); err != nil {
			return err
		}
		if c.NATSCommands.AckWait <= c.MQTT.PublishTimeout {
			return fmt.Errorf("NATS_COMMANDS_ACK_WAIT (%s) must be longer than MQTT_PUBLISH_TIMEOUT (%s), or commands are redelivered while still being published", c.NATSCommands.AckWait, c.MQTT.PublishTimeout)
		}
	}
	if c.Backbone == "kafka" {
		if err := c.Kafka.Validate(); err != nil {
			return err
		}
		if err := c.KafkaSink.Validate(); err != nil {
			return err
		}
		if err := c.KafkaCommands.Validate(); err != nil {
			return err
		}
	}
	return c.JetStream.Validate()
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// envVar is one configuration variable as -h and the start log show it.
type envVar struct {
	Name, Default, Desc string
	Secret              bool
	field               string
	value               reflect.Value
}

// envVars walks cfg's fields in declaration order.
func envVars(cfg *Config) []envVar {
	var out []envVar
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" && f.Type != reflect.TypeOf(time.Time{}) {
				walk(v.Field(i))
				continue
			}
			name := f.Tag.Get("env")
			if name == "" {
				continue
			}
			out = append(out, envVar{
				Name:    strings.Split(name, ",")[0],
				Default: f.Tag.Get("envDefault"),
				Desc:    f.Tag.Get("desc"),
				Secret:  f.Tag.Get("secret") == "true",
				field:   f.Name,
				value:   v.Field(i),
			})
		}
	}
	walk(reflect.ValueOf(cfg).Elem())
	return out
}

// explainEnvError turns caarlos0/env's field-named errors into one line that
// names the variable and the bad value's problem.
func explainEnvError(err error) error {
	var pe env.ParseError
	if errors.As(err, &pe) {
		for _, v := range envVars(&Config{}) {
			if v.field == pe.Name {
				return fmt.Errorf("%s: %v", v.Name, pe.Err)
			}
		}
	}
	return err
}

// printUsage lists every variable with its default.
func printUsage(w io.Writer) {
	fmt.Fprintf(w, "nr-bridge %s: joins MQTT agent nodes to NATS JetStream or Kafka.\n\n", version())
	fmt.Fprintf(w, "Usage: nr-bridge [-dev [-dev-data DIR]] [-version] [-h]\n\nConfiguration is read from the environment:\n\n")
	for _, v := range envVars(&Config{}) {
		def := v.Default
		if def == "" {
			def = "(unset)"
		}
		fmt.Fprintf(w, "  %-24s default %s\n      %s\n", v.Name, def, v.Desc)
	}
}

// logAttrs is the configuration as logged at start, secrets redacted.
func (c *Config) logAttrs() []any {
	var attrs []any
	for _, v := range envVars(c) {
		val := redact.URLs(fmt.Sprint(v.value.Interface()))
		if v.Secret && val != "" {
			val = "[redacted]"
		}
		attrs = append(attrs, v.Name, val)
	}
	return attrs
}
