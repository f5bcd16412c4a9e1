package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// CommandStatuses is what the status routes and ?wait call: command
// tracking (*tracker.Tracker).
type CommandStatuses interface {
	// Get returns a command's status; bridge.ErrStatusNotFound when
	// unknown, bridge.ErrStatusUnavailable when the store cannot answer.
	Get(ctx context.Context, org, correlationID string) (*bridge.CommandStatus, error)
	// Wait returns the status once it is final, the command expired or
	// ctx ended, without polling.
	Wait(ctx context.Context, org, correlationID string) (*bridge.CommandStatus, error)
}

// MaxWait caps ?wait on the command routes: 30 s, so that a wait plus the
// publish (MQTT_PUBLISH_TIMEOUT, 10 s) stays within the server's 60 s
// write timeout. A longer wait is cut to it.
const MaxWait = 30 * time.Second

// errBadWait means the wait query parameter is not a duration.
var errBadWait error = &classedError{"wait must be a duration such as 10s or 1500ms, or whole seconds, at most 30s", bridge.ErrBadRequest}

// publishedBody is the 202 response of a command route: the broker
// acknowledged the command (PUBACK). Status is the command's status then
// (published, or what it became during a ?wait); NoSubscribers says the
// PUBACK reason was 0x10, no node subscribed; StatusURL is where its
// status can be read, when commands are tracked.
type publishedBody struct {
	Status        string `json:"status"`
	Topic         string `json:"topic"`
	CorrelationID string `json:"correlation_id"`
	StatusURL     string `json:"status_url,omitempty"`
	NoSubscribers bool   `json:"no_subscribers,omitempty"`
}

// parseWait reads ?wait: absent is 0 (answer at once); "10s", "1500ms" or
// "10" (seconds); capped at MaxWait.
func parseWait(r *http.Request) (time.Duration, error) {
	q := r.URL.Query()
	if !q.Has("wait") {
		return 0, nil
	}
	v := q.Get("wait")
	var d time.Duration
	var err error
	if n, aerr := strconv.ParseUint(v, 10, 32); aerr == nil {
		d = time.Duration(n) * time.Second
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < 0 {
		return 0, fmt.Errorf("wait %q: %w", v, errBadWait)
	}
	return min(d, MaxWait), nil
}

// statusURL is the path of a command's status document.
func statusURL(org, correlationID string) string {
	return "/org/" + org + "/commands/" + url.PathEscape(correlationID)
}

// respondPublished answers a published command: 202 with publishedBody at
// once, or with ?wait after the node's reply (200 with the status
// document) or the end of the wait or of the TTL (202 with the status
// then). A command no node subscribed to is answered at once: nobody will
// reply.
func (c *commandRoutes) respondPublished(w http.ResponseWriter, r *http.Request, t bridge.Target, cmd bridge.Command, res bridge.PublishResult, wait time.Duration) {
	body := publishedBody{
		Status:        bridge.StatusPublished,
		Topic:         res.Topic,
		CorrelationID: cmd.CorrelationID,
		NoSubscribers: res.ReasonCode == bridge.ReasonNoMatchingSubscribers,
	}
	if c.statuses == nil {
		writeJSON(w, http.StatusAccepted, body)
		return
	}
	body.StatusURL = statusURL(t.Org, cmd.CorrelationID)
	w.Header().Set("Location", body.StatusURL)
	if wait > 0 && !body.NoSubscribers {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		if d := draining(r); d != nil {
			go func() {
				select {
				case <-d: // shutting down: answer with the status now
					cancel()
				case <-ctx.Done():
				}
			}()
		}
		s, err := c.statuses.Wait(ctx, t.Org, cmd.CorrelationID)
		cancel()
		switch {
		case err != nil:
			c.log.Warn("waiting for the reply failed", "org", t.Org, "node", t.Node, "correlation_id", cmd.CorrelationID, "err", err)
		case s.Status == bridge.StatusReplied:
			writeJSON(w, http.StatusOK, s)
			return
		default:
			body.Status = s.Status
		}
	}
	writeJSON(w, http.StatusAccepted, body)
}

// registerStatus adds GET /org/{orgId}/commands/{correlationId} and, with
// ORG_ID, GET /commands/{correlationId}.
func (c *commandRoutes) registerStatus(mux *http.ServeMux) {
	mux.Handle("GET /org/{orgId}/commands/{correlationId}", c.statusHandler(func(r *http.Request) string { return r.PathValue("orgId") }))
	if org := c.intake.OrgID(); org != "" {
		mux.Handle("GET /commands/{correlationId}", c.statusHandler(func(*http.Request) string { return org }))
	}
}

// statusHandler serves a command's status document: 200, 404 when the
// store does not know the command (never sent, or expired from the
// store) or no longer holds it (the Kafka view's per-org bound), 400 for a bad org ID, 403 outside ORG_ID, 503 while the store
// cannot answer.
func (c *commandRoutes) statusHandler(org func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, id := org(r), r.PathValue("correlationId")
		if err := c.intake.CheckTarget(bridge.Target{Org: o}); err != nil {
			writeCommandError(w, err)
			return
		}
		s, err := c.statuses.Get(r.Context(), o, id)
		if err != nil {
			switch {
			case errors.Is(err, bridge.ErrStatusEvicted):
				err = fmt.Errorf("command %q of org %q: %w (each replica keeps the newest KAFKA_STATUS_MAX_COMMANDS commands of an org; replies to it are still recorded)", strings.ToValidUTF8(id, "\uFFFD"), o, err)
			case errors.Is(err, bridge.ErrStatusNotFound):
				err = fmt.Errorf("command %q of org %q: %w (never sent through the bridge, or older than the command TTL plus COMMAND_STATUS_GRACE)", strings.ToValidUTF8(id, "\uFFFD"), o, err)
			default:
				c.log.Warn("command status not available", "org", o, "correlation_id", id, "err", err)
			}
			writeCommandError(w, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, s)
	})
}
