package api_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// startPublisher connects a real command publisher to a real Mosquitto.
func startPublisher(t *testing.T, orgID string) *publisher.Publisher {
	t.Helper()
	m := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	cfg := &mqttconn.Config{
		URL: m.URL(), ClientID: "auth-test", ShareGroup: "nr-listeners", Workers: 1, OrgID: orgID,
		SessionExpiry: time.Minute, KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second,
		ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second, MaxInflight: 100,
		AckInterval: 10 * time.Millisecond, PublishTimeout: 5 * time.Second,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	pub := publisher.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pub.Close(ctx)
	})
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	return pub
}

func commandBody() string {
	return fmt.Sprintf(`{"type":"reboot","version":1,"correlation_id":"c-1","issued_at":%d,"ttl_sec":60,"payload":{}}`, time.Now().Unix())
}

// counterValue returns the value of the series name{labels}, or -1 when
// it does not exist.
func counterValue(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, s := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range s.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return metricValue(s)
		}
	}
	return -1
}

func metricValue(s *dto.Metric) float64 {
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	case s.Histogram != nil:
		return float64(s.Histogram.GetSampleCount())
	}
	return -1
}

func TestBearerAuth(t *testing.T) {
	pub := startPublisher(t, "")
	auth, err := api.NewAuth(api.AuthConfig{Tokens: "admin-token-1, scoped-token-2=org1|org2"}, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.BackboneNATS, "test")
	h := api.NewHandler(api.Deps{
		Log: slog.New(slog.DiscardHandler), Commands: bridge.NewIntake(pub, bridge.CommandLimits{}, "", nil), Auth: auth, Metrics: m,
		Ready: map[string]api.ReadyFunc{"mqtt": pub.Ready},
	})
	const nodeRoute = "POST /org/{orgId}/node/{nodeId}/cmd"
	for _, tc := range []struct {
		name      string
		method    string
		path      string
		authz     string // Authorization header
		want      int
		challenge string // WWW-Authenticate, "" = none
	}{
		{name: "no token", method: "POST", path: "/org/org1/node/n1/cmd", want: 401, challenge: `Bearer realm="nr-bridge"`},
		{name: "wrong token", method: "POST", path: "/org/org1/node/n1/cmd", authz: "Bearer admin-token-2", want: 401, challenge: `Bearer realm="nr-bridge", error="invalid_token"`},
		{name: "token prefix", method: "POST", path: "/org/org1/node/n1/cmd", authz: "Bearer admin-token-", want: 401, challenge: `Bearer realm="nr-bridge", error="invalid_token"`},
		{name: "basic scheme", method: "POST", path: "/org/org1/node/n1/cmd", authz: "Basic YWRtaW4tdG9rZW4tMTo=", want: 401, challenge: `Bearer realm="nr-bridge"`},
		{name: "empty bearer", method: "POST", path: "/org/org1/node/n1/cmd", authz: "Bearer ", want: 401, challenge: `Bearer realm="nr-bridge"`},
		{name: "right token", method: "POST", path: "/org/org1/node/n1/cmd", authz: "Bearer admin-token-1", want: 202},
		{name: "scheme is case-insensitive", method: "POST", path: "/org/org9/node/n1/cmd", authz: "bearer admin-token-1", want: 202},
		{name: "scoped token, its org", method: "POST", path: "/org/org2/node/n1/cmd", authz: "Bearer scoped-token-2", want: 202},
		{name: "scoped token, other org", method: "POST", path: "/org/org3/node/n1/cmd", authz: "Bearer scoped-token-2", want: 403},
		{name: "scoped token, other org broadcast", method: "POST", path: "/org/org3/broadcast/cmd", authz: "Bearer scoped-token-2", want: 403},
		{name: "scoped token, escaped org", method: "POST", path: "/org/org%31/broadcast/cmd", authz: "Bearer scoped-token-2", want: 202},
		{name: "healthz stays open", method: "GET", path: "/healthz", want: 200},
		{name: "readyz stays open", method: "GET", path: "/readyz", want: 200},
		{name: "metrics stay open", method: "GET", path: "/metrics", want: 200},
		{name: "unknown route needs a token", method: "GET", path: "/nope", want: 401, challenge: `Bearer realm="nr-bridge"`},
		{name: "unknown route with token", method: "GET", path: "/nope", authz: "Bearer admin-token-1", want: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.method == "POST" {
				body = strings.NewReader(commandBody())
			} else {
				body = strings.NewReader("")
			}
			req := httptest.NewRequest(tc.method, tc.path, body)
			req.Header.Set("Content-Type", "application/json")
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.want, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			if tc.want >= 400 && tc.want != 404 && !strings.Contains(rec.Body.String(), `"error"`) {
				t.Errorf("body %s, want a JSON error", rec.Body)
			}
		})
	}
	// Requests refused by the auth middleware are counted under the route
	// they were for.
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{nodeRoute, "401", 5},
		{nodeRoute, "202", 3},
		{nodeRoute, "403", 1},
		{"POST /org/{orgId}/broadcast/cmd", "403", 1},
		{"POST /org/{orgId}/broadcast/cmd", "202", 1},
		{"GET /healthz", "200", 1},
		{"unmatched", "404", 1},
	} {
		if got := counterValue(t, m, "nr_bridge_http_requests_total", map[string]string{"route": c.route, "code": c.code}); got != c.want {
			t.Errorf("nr_bridge_http_requests_total{route=%q,code=%q} = %v, want %v", c.route, c.code, got, c.want)
		}
	}
}

// With ORG_ID the short routes act on that org, and a token's scope is
// checked against it.
func TestBearerAuthShortRoutes(t *testing.T) {
	pub := startPublisher(t, "org1")
	auth, err := api.NewAuth(api.AuthConfig{Tokens: "t-org1=org1,t-org2=org2"}, "org1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := api.NewHandler(api.Deps{Log: slog.New(slog.DiscardHandler), Commands: bridge.NewIntake(pub, bridge.CommandLimits{}, "org1", nil), Auth: auth})
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"own org, node", "/node/n1/cmd", "t-org1", 202},
		{"own org, broadcast", "/broadcast/cmd", "t-org1", 202},
		{"other org's token", "/node/n1/cmd", "t-org2", 403},
		{"other org's token, broadcast", "/broadcast/cmd", "t-org2", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", tc.path, strings.NewReader(commandBody()))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tc.token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.want, rec.Body)
			}
		})
	}
}

// RequireToken also works around a single route registered by hand, where
// the org comes from the route's own {orgId}.
func TestRequireTokenOnOneRoute(t *testing.T) {
	auth, err := api.NewAuth(api.AuthConfig{Tokens: "t1=o1"}, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /x/{orgId}", api.RequireToken(auth, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	for path, want := range map[string]int{"/x/o1": 204, "/x/o2": 403} {
		req := httptest.NewRequest("POST", path, nil)
		req.Header.Set("Authorization", "Bearer t1")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: status %d, want %d", path, rec.Code, want)
		}
	}
	// Without tokens the handler is returned as is.
	open, _ := api.NewAuth(api.AuthConfig{}, "", slog.New(slog.DiscardHandler))
	inner := http.NotFoundHandler()
	if got := api.RequireToken(open, inner); fmt.Sprint(got) != fmt.Sprint(inner) {
		t.Error("RequireToken without tokens wrapped the handler")
	}
}

func TestNewAuth(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "# bridge tokens\nfile-token-1\n\nfile-token-2=org7 , file-token-3\n")
	empty := write("empty", "# nothing here\n\n")
	for _, tc := range []struct {
		name    string
		cfg     api.AuthConfig
		accept  map[string]string // token -> an org it may act on
		refuse  map[string]string // token -> an org it may not act on
		wantErr string
	}{
		{name: "list with scopes", cfg: api.AuthConfig{Tokens: " a-token ,b-token=o1|o2,,"},
			accept: map[string]string{"a-token": "any", "b-token": "o2"}, refuse: map[string]string{"b-token": "o3"}},
		{name: "base64 padding is not a scope", cfg: api.AuthConfig{Tokens: "YWJjZA==,eHl6==="},
			accept: map[string]string{"YWJjZA==": "o1", "eHl6===": "o1"}},
		{name: "padded token with scope", cfg: api.AuthConfig{Tokens: "YWJjZA===o1"},
			accept: map[string]string{"YWJjZA==": "o1"}, refuse: map[string]string{"YWJjZA==": "o2"}},
		{name: "file and variable add up", cfg: api.AuthConfig{Tokens: "env-token", TokensFile: good},
			accept: map[string]string{"env-token": "o1", "file-token-1": "o1", "file-token-2": "org7", "file-token-3": "o1"},
			refuse: map[string]string{"file-token-2": "o1"}},
		{name: "missing file", cfg: api.AuthConfig{TokensFile: filepath.Join(dir, "missing")}, wantErr: "HTTP_AUTH_TOKENS_FILE: open"},
		{name: "file without tokens", cfg: api.AuthConfig{TokensFile: empty}, wantErr: "HTTP_AUTH_TOKENS_FILE " + empty + ": no tokens"},
		{name: "bad org", cfg: api.AuthConfig{Tokens: "secret-1=o1|bad org"}, wantErr: `HTTP_AUTH_TOKENS: entry 1: org "bad org"`},
		{name: "empty scope org", cfg: api.AuthConfig{Tokens: "x,secret-1=o1|"}, wantErr: `HTTP_AUTH_TOKENS: entry 2: org ""`},
		{name: "empty token", cfg: api.AuthConfig{Tokens: "=o1"}, wantErr: "HTTP_AUTH_TOKENS: entry 1: empty token"},
		{name: "duplicate", cfg: api.AuthConfig{Tokens: "secret-1,secret-1=o1"}, wantErr: "HTTP_AUTH_TOKENS: entry 2: a token is listed twice"},
		{name: "control character", cfg: api.AuthConfig{Tokens: "secret\x01"}, wantErr: "printable ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := api.NewAuth(tc.cfg, "", slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NewAuth = %v, want an error containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error %q shows the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			check := func(token, org string, want int) {
				t.Helper()
				mux := http.NewServeMux()
				mux.Handle("POST /org/{orgId}/x", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
				req := httptest.NewRequest("POST", "/org/"+org+"/x", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				api.RequireToken(a, mux).ServeHTTP(rec, req)
				if rec.Code != want {
					t.Errorf("token %q org %q: status %d, want %d", token, org, rec.Code, want)
				}
			}
			for tok, org := range tc.accept {
				check(tok, org, 204)
			}
			for tok, org := range tc.refuse {
				check(tok, org, 403)
			}
		})
	}
}

func TestNewAuthWarnsWithoutTokens(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	if _, err := api.NewAuth(api.AuthConfig{}, "", log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"level":"WARN"`) || !strings.Contains(buf.String(), "unauthenticated") {
		t.Fatalf("log %s, want a WARN that the API is unauthenticated", buf.String())
	}
	buf.Reset()
	if _, err := api.NewAuth(api.AuthConfig{Tokens: "t"}, "", log); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("log %s, want nothing with tokens set", buf.String())
	}
}
