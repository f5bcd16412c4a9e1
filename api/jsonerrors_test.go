package api_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
)

// TestMuxErrorsAreJSON: the ServeMux's own 404 and 405 answers are JSON
// like every other error, the 405 keeps its Allow header, and the request
// counter still sees their status.
func TestMuxErrorsAreJSON(t *testing.T) {
	cfg := &mqttconn.Config{URL: "tcp://127.0.0.1:1", ClientID: "json-errors"}
	m := metrics.New("nats", "test")
	h := api.NewHandler(api.Deps{
		Log:      cmdTestLogger(t),
		Ready:    map[string]api.ReadyFunc{},
		Commands: bridge.NewIntake(publisher.New(cfg, cmdTestLogger(t), nil), bridge.CommandLimits{}, "", nil),
		Metrics:  m,
	})
	for _, tt := range []struct {
		method, path string
		code         int
		allow, error string
	}{
		{http.MethodGet, "/nowhere", 404, "", "no route for GET /nowhere"},
		{http.MethodPost, "/org/acme/node/n1/cmd/extra", 404, "", "no route for POST /org/acme/node/n1/cmd/extra"},
		{http.MethodGet, "/org/acme/node/n1/cmd", 405, "POST", "method GET not allowed on /org/acme/node/n1/cmd, allowed: POST"},
		{http.MethodPost, "/org/acme/commands/c-1", 404, "", "no route for POST /org/acme/commands/c-1"}, // no tracking here
		// Only the command routes are method-checked: for an open route
		// with the wrong method the protected routes' "/" answers.
		{http.MethodDelete, "/healthz", 404, "", "no route for DELETE /healthz"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("%d %q is not JSON: %v", rec.Code, rec.Body.String(), err)
			}
			if rec.Code != tt.code || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Allow") != tt.allow ||
				body["error"] != tt.error || len(body) != 1 {
				t.Fatalf("%d %v %s, want %d, Allow %q, error %q", rec.Code, rec.Header(), rec.Body.String(), tt.code, tt.allow, tt.error)
			}
		})
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{`nr_bridge_http_requests_total{code="404",route="unmatched"} 4`, `nr_bridge_http_requests_total{code="405",route="unmatched"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics has no %s:\n%s", want, rec.Body.String())
		}
	}
}

// TestServerErrorsAreJSON sends what net/http's server refuses before any
// handler runs, over TCP: headers over MaxHeaderBytes (431) and a request
// it cannot parse (400). Both answers are JSON with their status.
func TestServerErrorsAreJSON(t *testing.T) {
	srv, err := api.Listen("127.0.0.1:0", api.NewHandler(api.Deps{Log: cmdTestLogger(t)}), cmdTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-served
	})
	for _, tt := range []struct {
		name    string
		request string
		code    int
		error   string
	}{
		{"headers too large", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", http.DefaultMaxHeaderBytes+8192) + "\r\n\r\n",
			http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"},
		{"malformed", "GARBAGE\r\n\r\n", http.StatusBadRequest, "bad request"},
		{"no host", "GET /healthz HTTP/1.1\r\n\r\n", http.StatusBadRequest, "bad request: missing required host header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			// The server answers and closes while the request is still
			// being written: write from another goroutine.
			go func() { _, _ = io.WriteString(c, tt.request) }()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var body map[string]any
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatalf("%s %q is not JSON: %v", resp.Status, b, err)
			}
			if resp.StatusCode != tt.code || resp.Header.Get("Content-Type") != "application/json" || body["error"] != tt.error {
				t.Fatalf("%s %v %s, want %d with error %q", resp.Status, resp.Header, b, tt.code, tt.error)
			}
		})
	}
	// An ordinary answer goes through untouched.
	resp, err := http.Get("http://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "{\"status\":\"ok\"}\n" {
		t.Fatalf("GET /healthz: %s %q", resp.Status, b)
	}
}
