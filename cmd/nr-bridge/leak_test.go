package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// Credentials the leak test configures; none may show in any output.
const (
	leakMQTTURLUser  = "mqttuser-in-url-31f7"
	leakMQTTURLPass  = "mqtt-url-pw-8c2e51"
	leakMQTTPassword = "mqtt-env-pw-a94d02"
	leakNATSURLUser  = "natsuser-in-url-6b1d"
	leakNATSURLPass  = "nats-url-pw-07aa3c"
	leakNATSURLToken = "nats-url-token-e5f810"
	leakNATSPassword = "nats-env-pw-c3b9d4"
	leakNATSToken    = "nats-env-token-2f6e77"
	leakAPIToken     = "api-bearer-token-9d04b1"
)

var leakSecrets = []string{leakMQTTURLUser, leakMQTTURLPass, leakMQTTPassword, leakNATSURLUser, leakNATSURLPass,
	leakNATSURLToken, leakNATSPassword, leakNATSToken, leakAPIToken}

// leakProbe collects everything a running bridge shows: its log (stdout
// and stderr) and every /readyz and /metrics body fetched.
type leakProbe struct {
	p      *bridgeProc
	bodies []string
}

func (l *leakProbe) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return l.do(t, http.MethodGet, path, "", "")
}

func (l *leakProbe) do(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+l.p.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	l.bodies = append(l.bodies, method+" "+path+" "+resp.Status+"\n"+string(b))
	return resp.StatusCode, string(b)
}

// waitReadyz polls /readyz until its body contains want.
func (l *leakProbe) waitReadyz(t *testing.T, want string) {
	t.Helper()
	testserver.WaitFor(t, 20*time.Second, "/readyz saying "+want, func() bool {
		_, b := l.get(t, "/readyz")
		return strings.Contains(b, want)
	})
}

// waitLog waits until the bridge's log contains want.
func (l *leakProbe) waitLog(t *testing.T, want string) {
	t.Helper()
	testserver.WaitFor(t, 20*time.Second, "a log line with "+want, func() bool {
		return strings.Contains(l.p.out.String(), want)
	})
}

// TestBinaryShowsNoSecrets runs the real binary with every kind of
// credential configured, through bad input and faults (MQTT broker down,
// wrong MQTT password, backbone down, wrong backbone password or token, bad
// commands and tokens on the API, a bad configuration), and greps its whole
// log, every /readyz and /metrics body and every API answer for each
// password and token.
func TestBinaryShowsNoSecrets(t *testing.T) {
	pwBroker := startLeakBroker(t, "bridge", "right-mqtt-pw")
	natsUsers := testserver.StartNATS(t, testserver.NATSOptions{Users: map[string]string{leakNATSURLUser: leakNATSURLPass, "bridge": "right-nats-pw"}})
	natsToken := testserver.StartNATS(t, testserver.NATSOptions{Token: "right-nats-token"})
	closedPort := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	natsUserURL := "nats://" + leakNATSURLUser + ":" + leakNATSURLPass + "@127.0.0.1:" + strconv.Itoa(natsUsers.Port())

	for _, tc := range []struct {
		name string
		env  map[string]string
		// check waits for the fault to show (the positive control) and
		// makes requests.
		check func(t *testing.T, l *leakProbe)
	}{
		{name: "MQTT broker down, credentials in MQTT_URL", env: map[string]string{
			"MQTT_URL": "tcp://" + leakMQTTURLUser + ":" + leakMQTTURLPass + "@" + closedPort,
			"NATS_URL": natsUserURL,
		}, check: func(t *testing.T, l *leakProbe) {
			l.waitReadyz(t, "connection refused")
			l.waitLog(t, "MQTT connection attempt failed")
		}},
		{name: "wrong MQTT password in MQTT_URL", env: map[string]string{
			"MQTT_URL": "tcp://bridge:" + leakMQTTURLPass + "@" + pwBroker.Addr(),
			"NATS_URL": natsToken.URL(), "NATS_TOKEN": "right-nats-token",
		}, check: func(t *testing.T, l *leakProbe) {
			l.waitReadyz(t, "reason: 135") // not authorized
		}},
		{name: "wrong MQTT_PASSWORD", env: map[string]string{
			"MQTT_URL": pwBroker.URL(), "MQTT_USERNAME": "bridge", "MQTT_PASSWORD": leakMQTTPassword,
			"NATS_URL": natsUsers.URL(), "NATS_USER": "bridge", "NATS_PASSWORD": "right-nats-pw",
		}, check: func(t *testing.T, l *leakProbe) {
			l.waitReadyz(t, "reason: 135") // not authorized
		}},
		{name: "backbone down, credentials in NATS_URL", env: map[string]string{
			"MQTT_URL": pwBroker.URL(), "MQTT_USERNAME": "bridge", "MQTT_PASSWORD": "right-mqtt-pw",
			"NATS_URL": "nats://" + leakNATSURLUser + ":" + leakNATSURLPass + "@" + closedPort,
		}, check: func(t *testing.T, l *leakProbe) {
			// Issue 14: the log line and /readyz name the (redacted) URL
			// and the dial error, not just "connecting".
			l.waitLog(t, `"msg":"NATS connection attempt failed","component":"nats","url":"nats://redacted@`+closedPort+`"`)
			l.waitReadyz(t, `"backbone":"connecting to NATS nats://redacted@`+closedPort+`: dial tcp `+closedPort+`: connect: connection refused"`)
		}},
		{name: "wrong NATS_PASSWORD", env: map[string]string{
			"MQTT_URL": pwBroker.URL(), "MQTT_USERNAME": "bridge", "MQTT_PASSWORD": "right-mqtt-pw",
			"NATS_URL": natsUsers.URL(), "NATS_USER": "bridge", "NATS_PASSWORD": leakNATSPassword,
		}, check: func(t *testing.T, l *leakProbe) {
			l.waitLog(t, "Authorization Violation")
		}},
		{name: "wrong NATS_TOKEN", env: map[string]string{
			"MQTT_URL": pwBroker.URL(), "MQTT_USERNAME": "bridge", "MQTT_PASSWORD": "right-mqtt-pw",
			"NATS_URL": natsToken.URL(), "NATS_TOKEN": leakNATSToken,
		}, check: func(t *testing.T, l *leakProbe) {
			l.waitLog(t, "Authorization Violation")
		}},
		{name: "wrong token in NATS_URL", env: map[string]string{
			"MQTT_URL": pwBroker.URL(), "MQTT_USERNAME": "bridge", "MQTT_PASSWORD": "right-mqtt-pw",
			"NATS_URL": "nats://" + leakNATSURLToken + "@127.0.0.1:" + strconv.Itoa(natsToken.Port()),
		}, check: func(t *testing.T, l *leakProbe) {
			l.waitLog(t, "Authorization Violation")
		}},
		{name: "running, bad commands and tokens", env: map[string]string{
			"MQTT_URL": "tcp://bridge:right-mqtt-pw@" + pwBroker.Addr(),
			"NATS_URL": natsUserURL,
		}, check: func(t *testing.T, l *leakProbe) {
			l.waitReadyz(t, `"status":"ready"`)
			l.waitLog(t, "MQTT connection established")
			for _, r := range []struct {
				path, token, body string
				want              int
			}{
				{"/org/acme/node/n1/cmd", leakAPIToken, `{"type":`, http.StatusBadRequest},
				{"/org/acme/node/n1/cmd", leakAPIToken, `{"type":"x","version":1}`, http.StatusUnprocessableEntity},
				{"/org/acme/node/n1/cmd?wait=soon", leakAPIToken, `{"type":"x","version":1,"correlation_id":"c","issued_at":` +
					strconv.FormatInt(time.Now().Unix(), 10) + `,"ttl_sec":60,"payload":{}}`, http.StatusBadRequest},
				{"/org/acme/node/n%2B1/cmd", leakAPIToken, `{}`, http.StatusBadRequest},
				{"/org/acme/node/n1/cmd", "wrong-" + leakAPIToken, `{}`, http.StatusUnauthorized},
				{"/org/other/node/n1/cmd", leakAPIToken, `{}`, http.StatusForbidden},
				{"/nowhere", leakAPIToken, `{}`, http.StatusForbidden}, // no org: outside the token's scope
			} {
				if code, body := l.do(t, http.MethodPost, r.path, r.token, r.body); code != r.want {
					t.Errorf("POST %s: %d %s, want %d", r.path, code, body, r.want)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"MQTT_CLIENT_ID": "leak", "LOG_LEVEL": "debug", "HTTP_AUTH_TOKENS": leakAPIToken + "=acme",
				"MQTT_RECONNECT_MIN": "100ms", "MQTT_RECONNECT_MAX": "500ms"}
			for k, v := range tc.env {
				env[k] = v
			}
			l := &leakProbe{p: launchBinary(t, env)}
			tc.check(t, l)
			l.get(t, "/readyz")
			if code, _ := l.get(t, "/metrics"); code != http.StatusOK {
				t.Errorf("GET /metrics: %d", code)
			}
			if code := l.p.signal(t, syscall.SIGTERM); code != 0 && code != 1 {
				t.Errorf("exit code %d", code)
			}
			checkNoSecrets(t, "the log", l.p.out.String())
			checkNoSecrets(t, "the HTTP answers", strings.Join(l.bodies, "\n"))
		})
	}

	// A bad configuration is refused on stderr, quoting the value.
	for _, tc := range []struct{ name, key, value, want string }{
		{"MQTT_URL", "MQTT_URL", "tcp://" + leakMQTTURLUser + ":" + leakMQTTURLPass + "@127.0.0.1:notaport", "tcp://redacted@127.0.0.1:notaport"},
		{"MQTT_URL scheme", "MQTT_URL", "http://" + leakMQTTURLUser + ":" + leakMQTTURLPass + "@127.0.0.1:1", "http://redacted@127.0.0.1:1"},
		{"NATS_URL", "NATS_URL", "nats://" + leakNATSURLToken + "@", "nats://redacted@"},
	} {
		t.Run("bad configuration "+tc.name, func(t *testing.T) {
			cmd := exec.Command(bridgeBinary(t))
			cmd.Env = append(os.Environ(), tc.key+"="+tc.value)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
				t.Fatalf("err %v, output %q; want exit code 2 and %q", err, out, tc.want)
			}
			checkNoSecrets(t, "stderr", string(out))
		})
	}
}

func checkNoSecrets(t *testing.T, where, out string) {
	t.Helper()
	for _, secret := range leakSecrets {
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("%s shows %s: %s", where, secret, line)
			}
		}
	}
}

// startLeakBroker starts Mosquitto refusing anonymous clients, with one
// user.
func startLeakBroker(t *testing.T, user, password string) *testserver.Mosquitto {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pwFile, user, password).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	return testserver.StartMosquitto(t, testserver.MosquittoOptions{ExtraConfig: []string{"allow_anonymous false", "password_file " + pwFile}})
}
