package main

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// secretName matches variable names that hold a credential rather than a
// path to one.
var secretName = regexp.MustCompile(`PASSWORD|PASSPHRASE|TOKEN|SECRET|CREDENTIAL|API_KEY`)

// TestSecretFieldsTagged keeps every password or token variable tagged
// secret:"true", so the start log redacts it.
func TestSecretFieldsTagged(t *testing.T) {
	n := 0
	for _, v := range envVars(&Config{}) {
		if !secretName.MatchString(v.Name) || strings.HasSuffix(v.Name, "_FILE") {
			continue
		}
		n++
		if !v.Secret {
			t.Errorf("%s holds a credential but is not tagged secret:\"true\"", v.Name)
		}
	}
	if n < 4 {
		t.Fatalf("found %d credential variables, want at least MQTT_PASSWORD, NATS_PASSWORD, NATS_TOKEN, HTTP_AUTH_TOKENS", n)
	}
}

// secretsLogBuffer is a bytes.Buffer safe for the goroutines that log during run.
type secretsLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *secretsLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *secretsLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStartLogHasNoSecrets runs the bridge with every credential set, with
// a context that is already cancelled so it starts and stops at once, and
// checks that none of the values reaches the log, at any level; it also
// checks logAttrs directly for each variable tagged secret.
func TestStartLogHasNoSecrets(t *testing.T) {
	secrets := map[string]string{
		"MQTT_PASSWORD":       "mqtt-pw-7f3c9a",
		"HTTP_AUTH_TOKENS":    "http-token-1b2c3d=acme,http-token-4e5f6a",
		"KAFKA_SASL_PASSWORD": "kafka-pw-90ab12",
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		secrets []string
	}{
		{name: "user and password", env: map[string]string{
			"NATS_USER": "bridge", "NATS_PASSWORD": "nats-pw-c0ffee",
			"NATS_URL": "nats://urluser:url-pw-deadbeef@127.0.0.1:1",
		}, secrets: []string{"nats-pw-c0ffee", "url-pw-deadbeef"}},
		{name: "token", env: map[string]string{
			"NATS_TOKEN": "nats-token-feed42",
			"NATS_URL":   "nats://url-token-abad1dea@127.0.0.1:1",
		}, secrets: []string{"nats-token-feed42", "url-token-abad1dea"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{
				"HTTP_ADDR": "127.0.0.1:0", "MQTT_URL": "tcp://127.0.0.1:1", "MQTT_USERNAME": "bridge",
				"MQTT_CLIENT_ID": "secrets-test", "LOG_LEVEL": "debug",
			}
			want := append([]string{}, tc.secrets...)
			for k, v := range secrets {
				env[k] = v
				want = append(want, v)
			}
			for k, v := range tc.env {
				env[k] = v
			}
			// The token values themselves, without their scope.
			want = append(want, "http-token-1b2c3d", "http-token-4e5f6a")
			cfg, err := loadConfig(env)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range cfg.logAttrs() {
				s, _ := v.(string)
				for _, secret := range want {
					if strings.Contains(s, secret) {
						t.Errorf("logAttrs shows %q: %q", secret, s)
					}
				}
			}

			var buf secretsLogBuffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = run(ctx, cfg, log)
			out := buf.String()
			if !strings.Contains(out, "nr-bridge starting") || !strings.Contains(out, `"MQTT_PASSWORD":"[redacted]"`) {
				t.Fatalf("start log without the redacted configuration:\n%s", out)
			}
			for _, secret := range want {
				if strings.Contains(out, secret) {
					t.Errorf("the log shows %q:\n%s", secret, out)
				}
			}
		})
	}
}
