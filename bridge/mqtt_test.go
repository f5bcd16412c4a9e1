package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestRedactURLs(t *testing.T) {
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
			if got := RedactURLs(tc.in); got != tc.want {
				t.Errorf("RedactURLs(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRedactAttr(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: RedactAttr}))
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

func TestMQTTURLCredentials(t *testing.T) {
	t.Run("both in URL and variables", func(t *testing.T) {
		cfg := pubConfig("tcp://u:url-secret@127.0.0.1:1883", "both")
		cfg.Username = "u"
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "set the credentials in one place") || strings.Contains(err.Error(), "url-secret") {
			t.Fatalf("Validate = %v, want a refusal that does not show the password", err)
		}
	})
	t.Run("bad URL", func(t *testing.T) {
		cfg := pubConfig("tcp://u:url-secret@127.0.0.1:notaport", "bad")
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "tcp://redacted@127.0.0.1:notaport") {
			t.Fatalf("Validate = %v, want the redacted URL", err)
		}
	})
	// The user info of MQTT_URL is sent in CONNECT, and the URL autopaho
	// prints in its errors has none.
	t.Run("sent in CONNECT", func(t *testing.T) {
		broker := startBrokerWithPassword(t, "bridge", "right-pw")
		cc, err := pubConfig("tcp://bridge:wrong-pw@"+broker.Addr(), "x").clientConfig("x", 1, pubLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if cc.ServerUrls[0].User != nil || cc.ConnectUsername != "bridge" || string(cc.ConnectPassword) != "wrong-pw" {
			t.Fatalf("server URL %s, CONNECT user %q password %q", cc.ServerUrls[0], cc.ConnectUsername, cc.ConnectPassword)
		}
		p := startPublisher(t, pubConfig("tcp://bridge:right-pw@"+broker.Addr(), "url-creds"))
		if err := p.Ready(); err != nil {
			t.Fatal(err)
		}
	})
}

// startBrokerWithPassword starts Mosquitto refusing anonymous clients, with
// one user.
func startBrokerWithPassword(t *testing.T, user, password string) *testserver.Mosquitto {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pwFile, user, password).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	return testserver.StartMosquitto(t, testserver.MosquittoOptions{ExtraConfig: []string{"allow_anonymous false", "password_file " + pwFile}})
}
