package api

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/dlqtail"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// consoleFiles are the console's page, script and style sheet: plain
// HTML, CSS and a JavaScript module, no build step.
//
//go:embed console/index.html console/console.js console/console.css
var consoleFiles embed.FS

// consoleCSP allows the console's own files and requests to its own
// origin only: no inline script or style, no remote origin, no framing.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Console is what the operator console needs besides the command routes.
// Nil fields leave their panel empty (the route answers 404).
type Console struct {
	// Flow is the flow panel's counters (GET /console/api/flow).
	Flow FlowReporter
	// Watcher pushes status changes (GET
	// /org/{orgId}/commands/{correlationId}/events).
	Watcher StatusWatcher
	// DeadLetters reads the dead-letter stream or topic (GET
	// /org/{orgId}/deadletters).
	DeadLetters DeadLetterReader
}

// FlowReporter computes the flow panel's report (*metrics.Flow).
type FlowReporter interface {
	Report(now time.Time) metrics.FlowReport
}

// DeadLetterReader reads an org's most recent dead letters, newest first
// (dlqtail.NATS, dlqtail.Kafka).
type DeadLetterReader interface {
	Recent(ctx context.Context, org string, limit int) ([]dlqtail.Entry, error)
}

// registerConsole adds the console: its files on open (they hold no data,
// and the page must load to ask for a token), the flow route behind any
// valid token (bridge-wide counters, no org's data), and the org routes
// on protected, behind the token and its org scope like every API route.
func registerConsole(open, protected *http.ServeMux, d Deps) {
	c := d.Console
	now := time.Now
	files, _ := fs.Sub(consoleFiles, "console")
	open.Handle("GET /console", consoleHeaders(serveConsoleFile(files, "index.html")))
	open.Handle("GET /console/{file}", consoleHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveConsoleFile(files, path.Clean(r.PathValue("file"))).ServeHTTP(w, r)
	})))
	if c.Flow != nil {
		open.Handle("GET /console/api/flow", RequireAnyToken(d.Auth, flowHandler(c.Flow, d.Ready, d.orgID(), d.Auth.Enabled(), now)))
	}
	if c.Watcher != nil {
		maxWaits := d.MaxWaits
		if maxWaits <= 0 {
			maxWaits = DefaultMaxWaits
		}
		protected.Handle("GET /org/{orgId}/commands/{correlationId}/events", statusEvents(c.Watcher, d.orgID(), make(chan struct{}, maxWaits), now))
	}
	if c.DeadLetters != nil {
		protected.Handle("GET /org/{orgId}/deadletters", deadLetters(c.DeadLetters, d.orgID()))
	}
}

// serveConsoleFile serves one embedded file; http.ServeContent sets its
// Content-Type from the name.
func serveConsoleFile(files fs.FS, name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no console file %q", name), "")
			return
		}
		http.ServeContent(w, r, name, time.Time{}, bytesReader(b))
	})
}

// consoleHeaders sets the console's strict headers.
func consoleHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", consoleCSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// partState is one part's readiness in the flow report.
type partState struct {
	Name   string `json:"name"`
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// flowBody is the answer of GET /console/api/flow.
type flowBody struct {
	metrics.FlowReport
	// Parts are the readiness checks of /readyz: mqtt (the workers),
	// publisher, backbone.
	Parts []partState `json:"parts"`
	// OrgID is ORG_ID, "" when the bridge serves every org.
	OrgID string `json:"org_id,omitempty"`
	// Auth says the API needs a bearer token.
	Auth bool `json:"auth"`
}

// flowHandler serves the flow report with each part's readiness.
func flowHandler(f FlowReporter, ready map[string]ReadyFunc, orgID string, auth bool, now func() time.Time) http.Handler {
	names := make([]string, 0, len(ready))
	for n := range ready {
		names = append(names, n)
	}
	sort.Strings(names)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		body := flowBody{FlowReport: f.Report(now()), OrgID: orgID, Auth: auth, Parts: []partState{}}
		for _, n := range names {
			p := partState{Name: n, Ready: true}
			if err := ready[n](); err != nil {
				p.Ready, p.Reason = false, redact.URLs(err.Error())
			}
			body.Parts = append(body.Parts, p)
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, body)
	})
}

// deadLettersBody is the answer of GET /org/{orgId}/deadletters.
type deadLettersBody struct {
	DeadLetters []dlqtail.Entry `json:"dead_letters"`
}

// errDeadLettersUnavailable means the dead-letter stream or topic cannot
// be read now (backbone not open yet, or not reachable): 503.
var errDeadLettersUnavailable error = &classedError{"dead letters not available", bridge.ErrStatusUnavailable}

// deadLetters serves GET /org/{orgId}/deadletters?limit=N.
func deadLetters(d DeadLetterReader, orgID string) http.Handler {
	return orgListing(orgID, func(ctx context.Context, org string, limit int) (any, error) {
		es, err := d.Recent(ctx, org, limit)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errDeadLettersUnavailable, err)
		}
		if es == nil {
			es = []dlqtail.Entry{}
		}
		return deadLettersBody{DeadLetters: es}, nil
	})
}
