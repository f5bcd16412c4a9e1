package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backbone != "nats" || cfg.MQTT.URL != "tcp://localhost:1883" || cfg.NATS.URL != "nats://localhost:4222" ||
		cfg.HTTP.Addr != ":8080" || cfg.MQTT.ShareGroup != "nr-listeners" || cfg.MQTT.Workers != 2 ||
		cfg.MQTT.SessionExpiry != 10*time.Minute || cfg.JetStream.EventsStream != "NR_EVENTS" {
		t.Fatalf("defaults: %+v", cfg)
	}
	if !strings.HasPrefix(cfg.MQTT.ClientID, "nr-control-") {
		t.Fatalf("default client id %q", cfg.MQTT.ClientID)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"workers not a number", map[string]string{"MQTT_WORKERS": "abc"}, "MQTT_WORKERS: "},
		{"workers out of range", map[string]string{"MQTT_WORKERS": "0"}, "MQTT_WORKERS must be between 1 and 64"},
		{"bad duration", map[string]string{"MQTT_SESSION_EXPIRY": "600"}, "MQTT_SESSION_EXPIRY: "},
		{"bad backbone", map[string]string{"BACKBONE": "rabbit"}, `BACKBONE "rabbit"`},
		{"bad url scheme", map[string]string{"MQTT_URL": "http://x:1"}, "MQTT_URL"},
		{"cert without key", map[string]string{"MQTT_URL": "ssl://x:8883", "MQTT_CERT_FILE": "/c"}, "MQTT_CERT_FILE and MQTT_KEY_FILE"},
		{"ca on plain url", map[string]string{"MQTT_CA_FILE": "/ca"}, "need a TLS MQTT_URL"},
		{"bad org", map[string]string{"ORG_ID": "a.b"}, "ORG_ID"},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"bad prefix", map[string]string{"NATS_SUBJECT_PREFIX": "nr.>"}, "NATS_SUBJECT_PREFIX"},
		{"bad stream", map[string]string{"NATS_EVENTS_STREAM": "a.b"}, "NATS_EVENTS_STREAM"},
		{"bad bool", map[string]string{"NATS_MANAGE_STREAMS": "maybe"}, "NATS_MANAGE_STREAMS: "},
		{"wildcard client id", map[string]string{"MQTT_CLIENT_ID": "a+b"}, "MQTT_CLIENT_ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

// TestReadmeListsEveryVariable keeps the README's configuration table true.
func TestReadmeListsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, v := range envVars(&Config{}) {
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(v.Name) + "` \\|")
		if !row.MatchString(readme) {
			t.Errorf("README has no table row for %s", v.Name)
		}
	}
}

func TestSecretsRedacted(t *testing.T) {
	cfg, err := loadConfig(map[string]string{"MQTT_PASSWORD": "hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range cfg.logAttrs() {
		if s, ok := a.(string); ok && strings.Contains(s, "hunter2") {
			t.Fatalf("attr %d leaks the password: %q", i, s)
		}
	}
}
