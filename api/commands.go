package api

import (
	"context"
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

// CommandPublisher is what the command routes call: the bridge's single
// validating publisher (*publisher.Publisher).
type CommandPublisher interface {
	// Limits are the command limits bodies are parsed with.
	Limits() bridge.CommandLimits
	// Publish publishes a parsed command and returns after the broker's
	// PUBACK; see bridge.Publisher.Publish for the errors.
	Publish(ctx context.Context, t bridge.Target, c bridge.Command, source string) (bridge.PublishResult, error)
	// Refused counts a command refused before it reached Publish.
	Refused(source string, err error)
}

// Errors the command routes produce before the publisher is involved; the
// others come from bridge.
var (
	errUnsupportedMediaType = errors.New("content type must be application/json")
	errReadBody             = errors.New("cannot read the request body")
	// errTooManyWaits refuses a ?wait past HTTP_MAX_WAITS (429), before
	// the command is published, so a retry cannot publish it twice.
	errTooManyWaits = errors.New("too many requests waiting for replies (HTTP_MAX_WAITS): retry later, or without ?wait and read status_url")
)

// commandRoutes holds what every command route needs.
type commandRoutes struct {
	pub     CommandPublisher
	orgID   string
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
	c := &commandRoutes{pub: d.Commands, orgID: d.OrgID, maxBody: d.MaxBodyBytes, log: d.Log, now: time.Now, statuses: d.Statuses}
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
	if c.orgID != "" {
		mux.Handle("POST /node/{nodeId}/cmd", c.handler(func(r *http.Request) bridge.Target {
			return bridge.Target{Org: c.orgID, Node: r.PathValue("nodeId")}
		}))
		mux.Handle("POST /broadcast/cmd", c.handler(func(r *http.Request) bridge.Target {
			return bridge.Target{Org: c.orgID}
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
		cmd, err := c.parse(w, r, t)
		var wait time.Duration
		if err == nil {
			wait, err = parseWait(r)
		}
		if err == nil && wait > 0 && c.statuses != nil {
			select {
			case c.waits <- struct{}{}:
				defer func() { <-c.waits }()
			default:
				// Debug: a flood of these must not flood the log.
				c.log.Debug("command rejected", "org", t.Org, "node", t.Node, "err", errTooManyWaits)
				c.pub.Refused(bridge.SourceHTTP, errTooManyWaits)
				writeCommandError(w, errTooManyWaits)
				return
			}
		}
		if err != nil {
			c.log.Warn("command rejected", "org", t.Org, "node", t.Node, "err", err)
			c.pub.Refused(bridge.SourceHTTP, err)
			writeCommandError(w, err)
			return
		}
		res, err := c.pub.Publish(r.Context(), t, cmd, bridge.SourceHTTP)
		if err != nil {
			// The publisher logged refusals and timeouts already.
			if status, _, _ := commandStatus(err); status == http.StatusInternalServerError {
				c.log.Error("command publish failed", "org", t.Org, "node", t.Node, "correlation_id", cmd.CorrelationID, "err", err)
			}
			writeCommandError(w, err)
			return
		}
		c.respondPublished(w, r, t, cmd, res, wait)
	})
}

// parse runs every check that needs no broker, cheapest first.
func (c *commandRoutes) parse(w http.ResponseWriter, r *http.Request, t bridge.Target) (bridge.Command, error) {
	if err := t.Validate(); err != nil {
		return bridge.Command{}, err
	}
	if c.orgID != "" && t.Org != c.orgID {
		return bridge.Command{}, fmt.Errorf("org %q: %w %q", t.Org, bridge.ErrOutOfScope, c.orgID)
	}
	if err := checkJSONContentType(r.Header.Get("Content-Type")); err != nil {
		return bridge.Command{}, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return bridge.Command{}, fmt.Errorf("request body over %d bytes: %w", tooBig.Limit, err)
		}
		return bridge.Command{}, fmt.Errorf("%w: %v", errReadBody, err)
	}
	return bridge.ParseCommand(body, c.now(), c.pub.Limits())
}

// checkJSONContentType accepts application/json, with no charset or
// charset=utf-8 (any case). A missing Content-Type is refused too: curl -d
// sends application/x-www-form-urlencoded, and accepting anything would
// hide a client that posts the wrong thing.
func checkJSONContentType(ct string) error {
	if ct == "" {
		return fmt.Errorf("%w, got none", errUnsupportedMediaType)
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return fmt.Errorf("%w, got %q", errUnsupportedMediaType, ct)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return fmt.Errorf("%w with charset utf-8, got %q", errUnsupportedMediaType, ct)
	}
	return nil
}

// commandStatus is the one place that maps a command error to its HTTP
// status, the field at fault (for a 422 on one field) and whether to send
// Retry-After:
//
//	400 body not a JSON object, unreadable body, bad org or node ID, a
//	    ?wait that is not a duration ("field": "wait")
//	404 no status for the command (GET .../commands/{correlationId})
//	403 org outside ORG_ID
//	413 body over HTTP_MAX_BODY
//	415 content type not application/json
//	429 ?wait while HTTP_MAX_WAITS requests wait already; with Retry-After
//	422 a field missing or invalid ("field" names it), expired command
//	502 the broker refused the command for good (PUBACK reason code such as
//	    0x87 not authorized): retrying the same request will not help
//	503 broker not connected, no PUBACK within MQTT_PUBLISH_TIMEOUT, a
//	    temporary refusal (0x97 quota exceeded ...), shutting down, or the
//	    command status store not available; with Retry-After
//	500 anything else
func commandStatus(err error) (status int, field string, retry bool) {
	var fe *bridge.FieldError
	var tooBig *http.MaxBytesError
	var refused *bridge.RefusedError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "", false
	case errors.Is(err, errUnsupportedMediaType):
		return http.StatusUnsupportedMediaType, "", false
	case errors.Is(err, bridge.ErrStatusNotFound):
		return http.StatusNotFound, "", false
	case errors.Is(err, errBadWait):
		return http.StatusBadRequest, "wait", false
	case errors.Is(err, errTooManyWaits):
		return http.StatusTooManyRequests, "", true
	case errors.Is(err, errReadBody), errors.Is(err, bridge.ErrMalformed),
		errors.Is(err, bridge.ErrInvalidID), errors.Is(err, bridge.ErrInvalidTarget):
		return http.StatusBadRequest, "", false
	case errors.As(err, &fe):
		return http.StatusUnprocessableEntity, fe.Field, false
	case errors.Is(err, bridge.ErrInvalidCommand), errors.Is(err, bridge.ErrExpired):
		return http.StatusUnprocessableEntity, "", false
	case errors.Is(err, bridge.ErrOutOfScope):
		return http.StatusForbidden, "", false
	case errors.As(err, &refused):
		if refused.Temporary() {
			return http.StatusServiceUnavailable, "", true
		}
		return http.StatusBadGateway, "", false
	case errors.Is(err, bridge.ErrNotConnected), errors.Is(err, bridge.ErrPublishTimeout),
		errors.Is(err, bridge.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, bridge.ErrStatusUnavailable):
		return http.StatusServiceUnavailable, "", true
	}
	return http.StatusInternalServerError, "", false
}

// writeCommandError writes err as {"error": ..., "field": ...} with its
// status; a 500 does not leak internals.
func writeCommandError(w http.ResponseWriter, err error) {
	status, field, retry := commandStatus(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error publishing the command"
	}
	if retry {
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
	}
	writeError(w, status, msg, field)
}
