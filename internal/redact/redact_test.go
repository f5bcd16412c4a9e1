package redact

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestURLs(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"no url", "org/acme/node/n1/events", "org/acme/node/n1/events"},
		{"at sign without url", "not a url with an @ sign", "not a url with an @ sign"},
		{"url without user", "nats://localhost:4222", "nats://localhost:4222"},
		{"user and password", "tcp://user:secret@host:1883", "tcp://redacted@host:1883"},
		{"token", "tls://tok@a:4222", "tls://redacted@a:4222"},
		{"list, first", "nats://u:p@a:4222,nats://b:4222", "nats://redacted@a:4222,nats://b:4222"},
		{"list, second after a space", "nats://a:4222, nats://u:secret@b:4222", "nats://a:4222, nats://redacted@b:4222"},
		{"list, both", "nats://u:p@a:4222,nats://v:q@b:4222", "nats://redacted@a:4222,nats://redacted@b:4222"},
		{"bad escape", "nats://u:p%zz@a:4222", "nats://redacted@a:4222"},
		{"at sign in the password", "ssl://user:p@ss@broker:8883", "ssl://redacted@broker:8883"},
		{"slash in the password", "tcp://user:pa/ss@host:1883", "tcp://redacted@host:1883"},
		{"at sign in the path", "tcp://u:p@h:1883/x@y", "tcp://redacted@h:1883/x@y"},
		{"in an error", `failed to connect to tcp://user:secret@127.0.0.1:1883: dial tcp 127.0.0.1:1883: connect: connection refused`,
			`failed to connect to tcp://redacted@127.0.0.1:1883: dial tcp 127.0.0.1:1883: connect: connection refused`},
		{"quoted", `MQTT_URL "tcp://u:secret@h:x": want scheme://host:port`, `MQTT_URL "tcp://redacted@h:x": want scheme://host:port`},
		{"two in one text", "a tcp://u:1@h b nats://t@n:1", "a tcp://redacted@h b nats://redacted@n:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := URLs(tc.in); got != tc.want {
				t.Errorf("URLs(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRedactAttr(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: Attr}))
	err := fmt.Errorf("failed to connect to %s: %w", "tcp://u:secret-1@h:1883", errors.New("refused"))
	log.With("url", "nats://tok-2@n:4222").Warn("connect tcp://u:secret-3@h failed", "err", err, "n", 1,
		slog.Group("g", "url", "ssl://u:secret-4@h:8883"))
	slog.NewLogLogger(log.Handler(), slog.LevelWarn).Printf("paho: failed to connect to tcp://u:secret-5@h:1883")
	out := buf.String()
	for _, secret := range []string{"secret-1", "tok-2", "secret-3", "secret-4", "secret-5"} {
		if strings.Contains(out, secret) {
			t.Errorf("log shows %s:\n%s", secret, out)
		}
	}
	if strings.Count(out, "redacted@") != 5 || !strings.Contains(out, `"n":1`) {
		t.Errorf("want 5 redacted URLs and the other attributes as they were:\n%s", out)
	}
}
