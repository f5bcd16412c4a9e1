package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/devmode"
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

// TestConfigurationDocListsEveryVariable keeps docs/configuration.md's one
// table true: every variable the bridge reads (the Config structs and dev
// mode's) has exactly one row, whose default is the envDefault tag (or "—"
// when there is none); every row is a variable the bridge reads; and no
// other file of docs/ or the README has a variable table of its own.
func TestConfigurationDocListsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\| ([^|]*) \\|")
	rows := map[string][]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		rows[m[1]] = append(rows[m[1]], m[2])
	}
	vars := envVars(&Config{})
	dt := reflect.TypeOf(devmode.Config{})
	for i := range dt.NumField() {
		f := dt.Field(i)
		vars = append(vars, envVar{Name: f.Tag.Get("env"), Default: f.Tag.Get("envDefault")})
	}
	known := map[string]bool{}
	for _, v := range vars {
		known[v.Name] = true
		defs := rows[v.Name]
		if len(defs) != 1 {
			t.Errorf("docs/configuration.md has %d rows for %s, want 1", len(defs), v.Name)
			continue
		}
		switch {
		case v.Default == "" && v.Name == "MQTT_CLIENT_ID":
			if !strings.HasPrefix(defs[0], "`nr-control-<hostname>`") {
				t.Errorf("%s: default %q, want the computed `nr-control-<hostname>`", v.Name, defs[0])
			}
		case v.Default == "":
			if defs[0] != "—" && !strings.Contains(defs[0], "ORG_ID") {
				t.Errorf("%s has no envDefault; docs/configuration.md says %q, want —", v.Name, defs[0])
			}
		case !strings.HasPrefix(defs[0], "`"+v.Default+"`"):
			t.Errorf("%s: docs/configuration.md default %q, want `%s` (its envDefault)", v.Name, defs[0], v.Default)
		}
	}
	for name := range rows {
		if !known[name] {
			t.Errorf("docs/configuration.md has a row for %s, which the bridge does not read", name)
		}
	}
	// One table: other documents link to it instead of repeating rows.
	others, _ := filepath.Glob("../../docs/*.md")
	for _, f := range append(others, "../../README.md") {
		if filepath.Base(f) == "configuration.md" {
			continue
		}
		d, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		header := ""
		prev := ""
		for _, line := range strings.Split(string(d), "\n") {
			if strings.HasPrefix(line, "|") && !strings.HasPrefix(prev, "|") {
				header = line
			}
			prev = line
			if m := row.FindStringSubmatch(line); m != nil && known[m[1]] && strings.HasPrefix(header, "| variable") {
				t.Errorf("%s has a variable table with %s: variables belong in docs/configuration.md", f, m[1])
			}
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
