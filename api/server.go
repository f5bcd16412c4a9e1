// Package api is the bridge's HTTP API: health, readiness and (with the
// command publisher) the command routes.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// Config is the HTTP server configuration.
type Config struct {
	Addr    string `env:"HTTP_ADDR" envDefault:":8080" desc:"listen address of the HTTP API"`
	MaxBody int64  `env:"HTTP_MAX_BODY" envDefault:"1048576" desc:"largest command body in bytes; a larger one gets 413"`
	// MaxWaits bounds the command requests with ?wait in progress: each
	// holds a watch on the status store and a few goroutines for up to
	// MaxWait, so without a bound a flood of them exhausts the bridge.
	MaxWaits int `env:"HTTP_MAX_WAITS" envDefault:"256" desc:"command requests with ?wait in progress at most; past it 429 with Retry-After"`

	Auth AuthConfig // HTTP_AUTH_TOKENS, HTTP_AUTH_TOKENS_FILE (auth.go)
	TLS  TLSConfig  // HTTP_TLS_CERT_FILE, HTTP_TLS_KEY_FILE, HTTP_TLS_CLIENT_CA_FILE (tls.go)
}

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	if c.MaxBody < 1 {
		return fmt.Errorf("HTTP_MAX_BODY must be > 0, got %d", c.MaxBody)
	}
	if c.MaxWaits < 1 {
		return fmt.Errorf("HTTP_MAX_WAITS must be > 0, got %d", c.MaxWaits)
	}
	return nil
}

// ReadyFunc reports nil when a part of the bridge is ready, else why not.
type ReadyFunc func() error

// Deps are what the handlers call. Nil fields disable their routes.
type Deps struct {
	Log *slog.Logger
	// Ready maps a part name (mqtt, backbone) to its readiness check.
	Ready map[string]ReadyFunc
	// Commands is the command intake; nil disables the command routes.
	// With its OrgID (ORG_ID) set, commands for other orgs get 403 and
	// the short routes /node/{nodeId}/cmd and /broadcast/cmd target it.
	Commands *bridge.Intake
	// MaxBodyBytes is HTTP_MAX_BODY; 0 means DefaultMaxBody.
	MaxBodyBytes int64
	// MaxWaits is HTTP_MAX_WAITS, the command requests with ?wait in
	// progress at most; 0 means DefaultMaxWaits.
	MaxWaits int
	// Auth guards every route but /healthz, /readyz and /metrics; nil or
	// without tokens leaves them open (NewAuth logs a WARN then).
	Auth *Auth
	// Metrics counts requests and serves GET /metrics; nil disables both.
	Metrics Metrics
	// Statuses is command tracking: GET /org/{orgId}/commands/{id},
	// status_url and ?wait on the command routes (status.go); nil
	// disables them.
	Statuses CommandStatuses
	// Lister lists an org's commands, newest first: GET
	// /org/{orgId}/commands?limit=N (listing.go); nil disables it.
	Lister CommandLister
	// Console is the operator console at GET /console and the routes it
	// reads (console.go); nil disables them.
	Console *Console
}

// NewHandler wires every route in one place.
func NewHandler(d Deps) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /openapi.yaml", serveOpenAPI)
	mux.Handle("GET /readyz", readyz(d.Ready))
	if d.Metrics != nil {
		mux.Handle("GET /metrics", d.Metrics.Handler())
	}
	// Every other route is registered on protected and needs a bearer
	// token: health, readiness and metrics stay open for probes and
	// scrapers, the API description for tools (docs/operations.md "Security").
	protected := http.NewServeMux()
	if d.Commands != nil {
		registerCommands(protected, d)
	}
	if d.Lister != nil {
		protected.Handle("GET /org/{orgId}/commands", listCommands(d.Lister, d.orgID(), time.Now))
	}
	if d.Console != nil {
		registerConsole(mux, protected, d)
	}
	mux.Handle("/", RequireToken(d.Auth, protected))
	return countRequests(d.Metrics, jsonErrors(mux))
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readyBody struct {
	Status  string            `json:"status"`
	Reasons map[string]string `json:"reasons,omitempty"`
}

// readyz is 200 when every part is ready, else 503 with each part's reason.
func readyz(checks map[string]ReadyFunc) http.Handler {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		body := readyBody{Status: "ready"}
		for _, n := range names {
			if err := checks[n](); err != nil {
				if body.Reasons == nil {
					body.Reasons = map[string]string{}
				}
				// Reasons echo connection errors, which may embed a
				// broker or server URL; /readyz needs no token.
				body.Reasons[n] = redact.URLs(err.Error())
			}
		}
		if body.Reasons != nil {
			body.Status = "not ready"
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
		writeJSON(w, http.StatusOK, body)
	})
}

// Server is the HTTP server with the timeouts a public endpoint needs.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// Listen binds addr now, so a port in use fails at start with a clear error.
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	return ListenTLS(addr, nil, h, log)
}

// ListenTLS is Listen serving HTTPS with tc (from TLSConfig.Load); a nil tc
// serves plain HTTP.
func ListenTLS(addr string, tc *tls.Config, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("HTTP_ADDR %s: %w", addr, err)
	}
	if tc == nil {
		ln = jsonErrorListener{ln}
	}
	// Shutdown ends every ?wait at once (draining): the request contexts
	// carry it as a value, not as their parent, so a publish in progress
	// is not cancelled with it.
	draining, drain := context.WithCancel(context.Background())
	s := &Server{
		ln:  ln,
		log: log,
		srv: &http.Server{
			BaseContext: func(net.Listener) context.Context {
				return context.WithValue(context.Background(), drainingKey{}, draining)
			},
			TLSConfig:         tc,
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	s.srv.RegisterOnShutdown(drain)
	return s, nil
}

// drainingKey is the request context value holding the server's draining
// context, done once Shutdown started.
type drainingKey struct{}

// draining returns a channel closed once the server that serves r is
// shutting down; nil (never closed) outside a Server.
func draining(r *http.Request) <-chan struct{} {
	if ctx, ok := r.Context().Value(drainingKey{}).(context.Context); ok {
		return ctx.Done()
	}
	return nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve blocks until Shutdown; it never returns http.ErrServerClosed.
func (s *Server) Serve() error {
	var err error
	if tc := s.srv.TLSConfig; tc != nil {
		s.log.Info("HTTP API listening", "addr", s.Addr(), "tls", true, "client_certificates", tc.ClientAuth == tls.RequireAndVerifyClientCert)
		err = s.srv.ServeTLS(s.ln, "", "")
	} else {
		s.log.Info("HTTP API listening", "addr", s.Addr())
		err = s.srv.Serve(s.ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTP: %w", err)
	}
	return nil
}

// Shutdown stops accepting requests, ends every ?wait at once (answered
// 202 with the status then) and waits for the requests in progress until
// ctx ends; then it returns ctx's error and Close cuts what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	return s.srv.Close()
}

// orgID is the bridge's scope, ORG_ID, as the command intake holds it; ""
// when unscoped or without command routes.
func (d Deps) orgID() string {
	if d.Commands != nil {
		return d.Commands.OrgID()
	}
	return ""
}
