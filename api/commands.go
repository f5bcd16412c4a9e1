package api

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// DefaultMaxBody is the largest command body accepted when Deps.MaxBodyBytes
// is 0: 1 MiB, far above any sensible command and below the broker's and
// backbone's usual message size limits.
const DefaultMaxBody = 1 << 20

// RetryAfter is the Retry-After (seconds) sent with a 503 and a 429: long
// enough that clients do not hammer a bridge whose broker is down, short
// enough for a broker restart.
const RetryAfter = 5

// DefaultMaxWaits is the bound on command requests with ?wait in progress
// when Deps.MaxWaits is 0 (HTTP_MAX_WAITS' default): 256 watches on the
// status store, far more than operators waiting on replies by hand.
const DefaultMaxWaits = 256

// Errors the command routes produce before the publisher is involved; the
// others come from bridge.
var (
	errReadBody = &classedError{"cannot read the request body", bridge.ErrBadRequest}
	// errTooManyWaits refuses a ?wait past HTTP_MAX_WAITS (429), before
	// the command is published, so a retry cannot publish it twice.
	errTooManyWaits = &classedError{"too many requests waiting for replies (HTTP_MAX_WAITS): retry later, or without ?wait and read status_url", bridge.ErrTooManyRequests}
)

// commandRoutes holds what every command route needs.
type commandRoutes struct {
	intake  *bridge.Intake
	maxBody int64
	log     *slog.Logger
	now     func() time.Time
	// statuses is command tracking (status.go); nil: no status routes,
	// no status_url, no ?wait.
	statuses CommandStatuses
	// waits holds one token per request with ?wait in progress.
	waits chan struct{}
}

// registerCommands adds the command routes to mux: the org routes always,
// and with ORG_ID the short ones for that org.
func registerCommands(mux *http.ServeMux, d Deps) {
	c := &commandRoutes{intake: d.Commands, maxBody: d.MaxBodyBytes, log: d.Log, statuses: d.Statuses}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxBody
	}
	maxWaits := d.MaxWaits
	if maxWaits <= 0 {
		maxWaits = DefaultMaxWaits
	}
	c.waits = make(chan struct{}, maxWaits)
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "http")
	mux.Handle("POST /org/{orgId}/node/{nodeId}/cmd", c.handler(func(r *http.Request) bridge.Target {
		return bridge.Target{Org: r.PathValue("orgId"), Node: r.PathValue("nodeId")}
	}))
	mux.Handle("POST /org/{orgId}/broadcast/cmd", c.handler(func(r *http.Request) bridge.Target {
		return bridge.Target{Org: r.PathValue("orgId")}
	}))
	if org := c.intake.OrgID(); org != "" {
		mux.Handle("POST /node/{nodeId}/cmd", c.handler(func(r *http.Request) bridge.Target {
			return bridge.Target{Org: org, Node: r.PathValue("nodeId")}
		}))
		mux.Handle("POST /broadcast/cmd", c.handler(func(r *http.Request) bridge.Target {
			return bridge.Target{Org: org}
		}))
	}
	if c.statuses != nil {
		c.registerStatus(mux)
	}
}

// handler serves one command route: check the target (PathValue is already
// URL-decoded, so %2B %23 %2F %00 arrive as + # / NUL and fail the ID rule),
// the scope, the content type and the body, then publish and answer 202
// once the broker acknowledged.
func (c *commandRoutes) handler(target func(*http.Request) bridge.Target) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := target(r)
		body, err := c.read(w, r, t)
		var wait time.Duration
		if err == nil {
			wait, err = parseWait(r)
		}
		if err != nil {
			c.log.Warn("command rejected", "org", t.Org, "node", t.Node, "err", err)
			writeCommandError(w, c.intake.Refuse(bridge.SourceHTTP, err))
			return
		}
		if wait > 0 && c.statuses != nil {
			select {
			case c.waits <- struct{}{}:
				defer func() { <-c.waits }()
			default:
				// Debug: a flood of these must not flood the log.
				c.log.Debug("command rejected", "org", t.Org, "node", t.Node, "err", errTooManyWaits)
				writeCommandError(w, c.intake.Refuse(bridge.SourceHTTP, errTooManyWaits))
				return
			}
		}
		cmd, res, err := c.intake.Submit(r.Context(), bridge.SourceHTTP, t, body)
		if err != nil {
			// The publisher logged its refusals and timeouts already.
			switch {
			case cmd.CorrelationID == "":
				c.log.Warn("command rejected", "org", t.Org, "node", t.Node, "err", err)
			case bridge.Classify(err).HTTPStatus == http.StatusInternalServerError:
				c.log.Error("command publish failed", "org", t.Org, "node", t.Node, "correlation_id", cmd.CorrelationID, "err", err)
			}
			writeCommandError(w, err)
			return
		}
		c.respondPublished(w, r, t, cmd, res, wait)
	})
}

// read runs the checks that need neither the body's content nor the
// broker, cheapest first, then reads the body: a bad target or scope is
// refused before the body is read.
func (c *commandRoutes) read(w http.ResponseWriter, r *http.Request, t bridge.Target) ([]byte, error) {
	if err := c.intake.CheckTarget(t); err != nil {
		return nil, err
	}
	if err := checkJSONContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &classedError{fmt.Sprintf("request body over %d bytes: %v", tooBig.Limit, err), bridge.ErrTooLarge}
		}
		return nil, fmt.Errorf("%w: %v", errReadBody, err)
	}
	return body, nil
}

// checkJSONContentType accepts application/json, with no charset or
// charset=utf-8 (any case). A missing Content-Type is refused too: curl -d
// sends application/x-www-form-urlencoded, and accepting anything would
// hide a client that posts the wrong thing.
func checkJSONContentType(ct string) error {
	if ct == "" {
		return fmt.Errorf("%w, got none", bridge.ErrUnsupportedMedia)
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return fmt.Errorf("%w, got %q", bridge.ErrUnsupportedMedia, ct)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return fmt.Errorf("%w with charset utf-8, got %q", bridge.ErrUnsupportedMedia, ct)
	}
	return nil
}

// classedError is an error of the API with its own message that
// bridge.Classify classifies as class.
type classedError struct {
	msg   string
	class error
}

func (e *classedError) Error() string { return e.msg }
func (e *classedError) Unwrap() error { return e.class }

// writeCommandError writes err as {"error": ..., "field": ...} with its
// status; a 500 does not leak internals.
func writeCommandError(w http.ResponseWriter, err error) {
	f := bridge.Classify(err)
	status, retry := f.HTTPStatus, f.Retry
	field := ""
	var fe *bridge.FieldError
	switch {
	case errors.As(err, &fe):
		field = fe.Field
	case errors.Is(err, errBadWait):
		field = "wait"
	case errors.Is(err, errBadLimit):
		field = "limit"
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error publishing the command"
	}
	if retry && (status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests) {
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
	}
	writeError(w, status, msg, field)
}
