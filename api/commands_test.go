package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// cmdTestLogger logs to the test output, where a failing test shows it.
func cmdTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewJSONHandler(cmdTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type cmdTestWriter struct{ t *testing.T }

func (w cmdTestWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func cmdTestMQTTConfig(brokerURL, clientID, orgID string) *mqttconn.Config {
	cfg := bridgetest.MQTTConfig(brokerURL, clientID)
	cfg.OrgID, cfg.AckInterval = orgID, 10*time.Millisecond
	return cfg
}

// cmdTestEnv is a real Mosquitto, a subscriber on org/# and a publisher,
// behind the API handler.
type cmdTestEnv struct {
	broker *testserver.Mosquitto
	sub    *testclient.MQTT
	pub    *publisher.Publisher
	h      http.Handler
}

func newCmdTestEnv(t *testing.T, orgID string) *cmdTestEnv {
	t.Helper()
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	sub := testclient.ConnectMQTT(t, broker.URL(), "sub-"+strings.ReplaceAll(t.Name(), "/", "-"), "org/#")
	log := cmdTestLogger(t)
	pub := publisher.New(cmdTestMQTTConfig(broker.URL(), "api-test", orgID), log, nil)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	h := api.NewHandler(api.Deps{Log: log, Commands: bridge.NewIntake(pub, bridge.CommandLimits{}, orgID, nil)})
	return &cmdTestEnv{broker: broker, sub: sub, pub: pub, h: h}
}

// cmdBody is a valid command document issued now, with some fields
// replaced by raw JSON values.
func cmdBody(corr string, set map[string]string) []byte {
	fields := []struct{ k, v string }{
		{"type", `"reboot"`},
		{"version", `1`},
		{"correlation_id", fmt.Sprintf("%q", corr)},
		{"issued_at", fmt.Sprint(time.Now().Unix())},
		{"ttl_sec", `60`},
		{"payload", `{"delay": 5, "note": "caf\u00e9"}`},
	}
	var b bytes.Buffer
	b.WriteString("{ ")
	for i, f := range fields {
		if i > 0 {
			b.WriteString(", ")
		}
		v := f.v
		if s, ok := set[f.k]; ok {
			v = s
		}
		fmt.Fprintf(&b, "%q: %s", f.k, v)
	}
	b.WriteString(` }`)
	return b.Bytes()
}

type cmdResponse struct {
	status     int
	retryAfter string
	body       map[string]string
	raw        string
}

func (e *cmdTestEnv) post(t *testing.T, path, contentType string, body []byte) cmdResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	res := cmdResponse{status: rec.Code, retryAfter: rec.Header().Get("Retry-After"), raw: rec.Body.String()}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("POST %s: response content type %q, want application/json (body %q)", path, ct, res.raw)
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("POST %s: response %q is not a JSON object: %v", path, res.raw, err)
	}
	res.body = make(map[string]string, len(doc))
	for k, v := range doc {
		res.body[k] = fmt.Sprint(v) // no_subscribers is a boolean
	}
	return res
}

// expectOnly publishes a sentinel through the API and checks that it is the
// only message the subscriber got: the broker keeps one publisher's order,
// so anything published before it would have arrived first.
func (e *cmdTestEnv) expectOnly(t *testing.T, path, wantTopic string) {
	t.Helper()
	res := e.post(t, path, "application/json", cmdBody("sentinel", nil))
	if res.status != http.StatusAccepted {
		t.Fatalf("sentinel: status %d %s", res.status, res.raw)
	}
	testserver.WaitFor(t, 10*time.Second, "the sentinel", func() bool { return len(e.sub.Received()) > 0 })
	got := e.sub.Received()
	if len(got) != 1 || got[0].Topic != wantTopic || got[0].Properties == nil || string(got[0].Properties.CorrelationData) != "sentinel" {
		var topics []string
		for _, m := range got {
			topics = append(topics, m.Topic)
		}
		t.Fatalf("subscriber got %v, want only the sentinel on %s", topics, wantTopic)
	}
}

func TestCommandErrors(t *testing.T) {
	e := newCmdTestEnv(t, "")
	now := time.Now().Unix()
	idErr := func(which, id string) string {
		return fmt.Sprintf("%s id %q: must be 1 to 64 characters of A-Z a-z 0-9 _ -: invalid id", which, id)
	}
	tests := []struct {
		name        string
		path        string
		contentType string
		body        []byte
		wantStatus  int
		wantError   string // exact, or a prefix when it ends in "..."
		wantField   string
	}{
		{"encoded plus in org", "/org/o%2B1/node/n1/cmd", "application/json", cmdBody("c", nil), 400, idErr("org", "o+1"), ""},
		{"encoded hash in org", "/org/%23/node/n1/cmd", "application/json", cmdBody("c", nil), 400, idErr("org", "#"), ""},
		{"encoded slash in org", "/org/o%2F1/broadcast/cmd", "application/json", cmdBody("c", nil), 400, idErr("org", "o/1"), ""},
		{"encoded NUL in org", "/org/o%001/node/n1/cmd", "application/json", cmdBody("c", nil), 400, idErr("org", "o\x001"), ""},
		{"encoded plus in node", "/org/o1/node/%2B/cmd", "application/json", cmdBody("c", nil), 400, idErr("node", "+"), ""},
		{"encoded hash in node", "/org/o1/node/n%231/cmd", "application/json", cmdBody("c", nil), 400, idErr("node", "n#1"), ""},
		{"encoded slash in node", "/org/o1/node/a%2Fb/cmd", "application/json", cmdBody("c", nil), 400, idErr("node", "a/b"), ""},
		{"encoded NUL in node", "/org/o1/node/%00/cmd", "application/json", cmdBody("c", nil), 400, idErr("node", "\x00"), ""},
		{"dot in node", "/org/o1/node/a.b/cmd", "application/json", cmdBody("c", nil), 400, idErr("node", "a.b"), ""},
		{"dollar in org", "/org/$SYS/node/n1/cmd", "application/json", cmdBody("c", nil), 400, idErr("org", "$SYS"), ""},
		{"ID too long", "/org/" + strings.Repeat("o", 65) + "/broadcast/cmd", "application/json", cmdBody("c", nil), 400, idErr("org", strings.Repeat("o", 65)), ""},
		{"3 MB body", "/org/o1/node/n1/cmd", "application/json",
			cmdBody("c", map[string]string{"payload": `{"blob":"` + strings.Repeat("x", 3<<20) + `"}`}),
			413, "request body over 1048576 bytes: http: request body too large", ""},
		{"payload array", "/org/o1/node/n1/cmd", "application/json", cmdBody("c", map[string]string{"payload": `[1,2]`}), 422, "payload: must be a JSON object", "payload"},
		{"payload string", "/org/o1/broadcast/cmd", "application/json", cmdBody("c", map[string]string{"payload": `"x"`}), 422, "payload: must be a JSON object", "payload"},
		{"ttl zero", "/org/o1/node/n1/cmd", "application/json", cmdBody("c", map[string]string{"ttl_sec": `0`}), 422, "ttl_sec: must be an integer between 1 and 86400", "ttl_sec"},
		{"ttl over the maximum", "/org/o1/node/n1/cmd", "application/json", cmdBody("c", map[string]string{"ttl_sec": `86401`}), 422, "ttl_sec: must be an integer between 1 and 86400", "ttl_sec"},
		{"version string", "/org/o1/node/n1/cmd", "application/json", cmdBody("c", map[string]string{"version": `"1"`}), 422, "version: must be an integer >= 1", "version"},
		{"missing type", "/org/o1/node/n1/cmd", "application/json", bytes.Replace(cmdBody("c", nil), []byte(`"type": "reboot", `), nil, 1), 422, "type: required", "type"},
		{"correlation id too long", "/org/o1/node/n1/cmd", "application/json", cmdBody(strings.Repeat("c", 257), nil), 422, "correlation_id: must be at most 256 bytes", "correlation_id"},
		{"expired", "/org/o1/node/n1/cmd", "application/json",
			cmdBody("c", map[string]string{"issued_at": fmt.Sprint(now - 120)}),
			422, fmt.Sprintf("command expired at %s (issued_at %d + ttl_sec 60), ...", time.Unix(now-60, 0).UTC().Format(time.RFC3339), now-120), ""},
		{"far-future issued_at", "/org/o1/node/n1/cmd", "application/json",
			cmdBody("c", map[string]string{"issued_at": fmt.Sprint(now + 3600)}),
			422, "issued_at: must not be more than 30s in the future (it is ...", "issued_at"},
		{"text/plain", "/org/o1/node/n1/cmd", "text/plain", cmdBody("c", nil), 415, `content type must be application/json, got "text/plain"`, ""},
		{"form (curl -d default)", "/org/o1/node/n1/cmd", "application/x-www-form-urlencoded", cmdBody("c", nil), 415, `content type must be application/json, got "application/x-www-form-urlencoded"`, ""},
		{"no content type", "/org/o1/node/n1/cmd", "", cmdBody("c", nil), 415, "content type must be application/json, got none", ""},
		{"latin1 charset", "/org/o1/node/n1/cmd", "application/json; charset=latin1", cmdBody("c", nil), 415, `content type must be application/json with charset utf-8, got "application/json; charset=latin1"`, ""},
		{"malformed JSON", "/org/o1/node/n1/cmd", "application/json", []byte(`{"type": "reboot",`), 400, "not a JSON object: EOF", ""},
		{"empty body", "/org/o1/node/n1/cmd", "application/json", nil, 400, "not a JSON object: empty body", ""},
		{"JSON array", "/org/o1/node/n1/cmd", "application/json", []byte(`[{"type":"reboot"}]`), 400, "not a JSON object: got an array", ""},
		{"two objects", "/org/o1/node/n1/cmd", "application/json", append(cmdBody("c", nil), "{}"...), 400, "not a JSON object: data after the object", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.post(t, tt.path, tt.contentType, tt.body)
			if res.status != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", res.status, tt.wantStatus, res.raw)
			}
			if prefix, ok := strings.CutSuffix(tt.wantError, "..."); ok {
				if !strings.HasPrefix(res.body["error"], prefix) {
					t.Errorf("error %q, want it to start with %q", res.body["error"], prefix)
				}
			} else if res.body["error"] != tt.wantError {
				t.Errorf("error %q, want %q", res.body["error"], tt.wantError)
			}
			if res.body["field"] != tt.wantField {
				t.Errorf("field %q, want %q", res.body["field"], tt.wantField)
			}
			if len(res.body) > 2 || (tt.wantField == "" && len(res.body) != 1) {
				t.Errorf("body %s has other members than error and field", res.raw)
			}
			if res.retryAfter != "" {
				t.Errorf("Retry-After %q on a %d", res.retryAfter, res.status)
			}
		})
	}
	// Nothing was published for any of them.
	e.expectOnly(t, "/org/o1/node/n1/cmd", "org/o1/node/n1/cmd")
}

func TestCommandRoutesWithOrgID(t *testing.T) {
	e := newCmdTestEnv(t, "o1")
	res := e.post(t, "/org/o2/node/n1/cmd", "application/json", cmdBody("c", nil))
	if want := `org "o2": command outside the bridge's ORG_ID "o1"`; res.status != http.StatusForbidden || res.body["error"] != want {
		t.Fatalf("other org: %d %s, want 403 with error %q", res.status, res.raw, want)
	}
	res = e.post(t, "/org/o2/broadcast/cmd", "application/json", cmdBody("c", nil))
	if res.status != http.StatusForbidden {
		t.Fatalf("other org broadcast: %d %s, want 403", res.status, res.raw)
	}
	e.expectOnly(t, "/node/n7/cmd", "org/o1/node/n7/cmd")

	res = e.post(t, "/broadcast/cmd", "application/json", cmdBody("c-b", nil))
	want := map[string]string{"status": "published", "topic": "org/o1/broadcast/cmd", "correlation_id": "c-b"}
	if res.status != http.StatusAccepted || !maps.Equal(res.body, want) {
		t.Fatalf("short broadcast route: %d %s, want 202 %v", res.status, res.raw, want)
	}
	res = e.post(t, "/org/o1/node/n2/cmd", "application/json", cmdBody("c-n2", nil))
	if res.status != http.StatusAccepted || res.body["topic"] != "org/o1/node/n2/cmd" {
		t.Fatalf("own org on the long route: %d %s, want 202", res.status, res.raw)
	}
}

func TestCommandShortRoutesNeedOrgID(t *testing.T) {
	e := newCmdTestEnv(t, "")
	for _, path := range []string{"/node/n1/cmd", "/broadcast/cmd"} {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(cmdBody("c", nil)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound {
			t.Errorf("POST %s without ORG_ID: %d, want 404", path, rec.Code)
		}
	}
}

func TestCommandEndToEnd(t *testing.T) {
	e := newCmdTestEnv(t, "")
	node := cmdBody("c-node", map[string]string{"payload": `{"a": [1, 2, {"b": null}], "s": "\u00e9\n"}`})
	node = append(node, "\n"...) // kept as is, like every other byte
	before := time.Now()
	res := e.post(t, "/org/o1/node/n1/cmd", "application/json; charset=UTF-8", node)
	after := time.Now()
	want := map[string]string{"status": "published", "topic": "org/o1/node/n1/cmd", "correlation_id": "c-node"}
	if res.status != http.StatusAccepted || !maps.Equal(res.body, want) {
		t.Fatalf("node command: %d %s, want 202 %v", res.status, res.raw, want)
	}
	bcast := cmdBody("c-bcast", map[string]string{"ttl_sec": "3600", "extra": `"kept"`})
	res = e.post(t, "/org/o1/broadcast/cmd", "application/json", bcast)
	want = map[string]string{"status": "published", "topic": "org/o1/broadcast/cmd", "correlation_id": "c-bcast"}
	if res.status != http.StatusAccepted || !maps.Equal(res.body, want) {
		t.Fatalf("broadcast: %d %s, want 202 %v", res.status, res.raw, want)
	}

	testserver.WaitFor(t, 10*time.Second, "2 commands", func() bool { return len(e.sub.Received()) >= 2 })
	got := e.sub.Received()
	if len(got) != 2 {
		t.Fatalf("received %d messages, want 2", len(got))
	}
	for i, w := range []struct {
		topic, corr, response string
		ttl                   int64
		body                  []byte
	}{
		{"org/o1/node/n1/cmd", "c-node", "org/o1/node/n1/reply", 60, node},
		{"org/o1/broadcast/cmd", "c-bcast", "", 3600, bcast},
	} {
		m := got[i]
		if m.Topic != w.topic || m.QoS != 1 || m.Retain {
			t.Errorf("message %d: topic %q qos %d retain %v, want %q qos 1 not retained", i, m.Topic, m.QoS, m.Retain, w.topic)
		}
		if !bytes.Equal(m.Payload, w.body) {
			t.Errorf("message %d: payload %q, want %q byte for byte", i, m.Payload, w.body)
		}
		p := m.Properties
		if p == nil {
			t.Fatalf("message %d: no properties", i)
		}
		if p.ContentType != "application/json" || string(p.CorrelationData) != w.corr || p.ResponseTopic != w.response {
			t.Errorf("message %d: content type %q, correlation data %q, response topic %q; want application/json, %q, %q",
				i, p.ContentType, p.CorrelationData, p.ResponseTopic, w.corr, w.response)
		}
		// Expiry = what was left of issued_at+ttl when published, rounded
		// up; the broker may take one more second off.
		exp := before.Unix() + w.ttl
		hi := uint32(exp - before.Unix())
		lo := uint32(exp-after.Unix()) - 1
		if p.MessageExpiry == nil || *p.MessageExpiry < lo || *p.MessageExpiry > hi {
			t.Errorf("message %d: message expiry %v, want between %d and %d", i, p.MessageExpiry, lo, hi)
		}
	}
}

func TestCommandBrokerDown(t *testing.T) {
	e := newCmdTestEnv(t, "")
	e.broker.Stop()
	testserver.WaitFor(t, 10*time.Second, "publisher sees the broker down", func() bool { return e.pub.Ready() != nil })
	res := e.post(t, "/org/o1/node/n1/cmd", "application/json", cmdBody("c", nil))
	if res.status != http.StatusServiceUnavailable || res.retryAfter != "5" {
		t.Fatalf("broker down: %d Retry-After %q %s, want 503 with Retry-After 5", res.status, res.retryAfter, res.raw)
	}
	if want := "publish org/o1/node/n1/cmd: mqtt not connected: "; !strings.HasPrefix(res.body["error"], want) {
		t.Fatalf("error %q, want it to start with %q", res.body["error"], want)
	}
	e.broker.Restart()
	testserver.WaitFor(t, 10*time.Second, "publisher reconnected", func() bool { return e.pub.Ready() == nil })
	// The subscriber reconnects on its own; wait until it is subscribed
	// again by publishing until a command arrives.
	testserver.WaitFor(t, 10*time.Second, "a command after the restart", func() bool {
		res := e.post(t, "/org/o1/node/n1/cmd", "application/json", cmdBody("after", nil))
		return res.status == http.StatusAccepted && len(e.sub.Received()) > 0
	})
	for _, m := range e.sub.Received() {
		if string(m.Properties.CorrelationData) != "after" {
			t.Fatalf("received %q, want only commands sent after the restart", m.Properties.CorrelationData)
		}
	}
}

func TestCommandHandlerNoLeak(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	leaks := goleak.IgnoreCurrent()
	pub := publisher.New(cmdTestMQTTConfig(broker.URL(), "api-leak", ""), cmdTestLogger(t), nil)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	h := api.NewHandler(api.Deps{Log: cmdTestLogger(t), Commands: bridge.NewIntake(pub, bridge.CommandLimits{}, "", nil)})
	req := httptest.NewRequest(http.MethodPost, "/org/o1/node/n1/cmd", bytes.NewReader(cmdBody("c", nil)))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	if err := pub.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	req = httptest.NewRequest(http.MethodPost, "/org/o1/node/n1/cmd", bytes.NewReader(cmdBody("c", nil)))
	req.Header.Set("Content-Type", "application/json")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "5" {
		t.Fatalf("after Stop: status %d Retry-After %q %s, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	goleak.VerifyNone(t, leaks)
}
