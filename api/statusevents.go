package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// StatusWatcher pushes a command's status as it changes: the status
// store's Watch (bridge.StatusStore).
type StatusWatcher interface {
	// Watch sends the status each time it changes, starting with the
	// current one; the channel closes when ctx ends or the store stops
	// watching.
	Watch(ctx context.Context, org, correlationID string) (<-chan *bridge.CommandStatus, error)
}

// Bounds of a status event stream.
const (
	// MaxEventStream is the longest a status event stream stays open;
	// the console opens another if the command is still going.
	MaxEventStream = 10 * time.Minute
	// eventKeepAlive is how often an idle stream sends a comment, so
	// that proxies do not time it out.
	eventKeepAlive = 15 * time.Second
)

// statusEvents serves GET /org/{orgId}/commands/{correlationId}/events as
// server-sent events over the status store's watch, without polling:
// "event: status" with the status document (refreshed as of now) at once
// when the store holds one and at each change, then "event: end" once
// the status is final (for a broadcast: once its TTL passed, as replies
// keep coming until then). It ends too when the client goes, the server
// shuts down, or after MaxEventStream. Streams in progress count against
// HTTP_MAX_WAITS like ?wait (429 past it).
func statusEvents(sw StatusWatcher, orgID string, slots chan struct{}, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		org, ok := orgRoute(w, r, orgID)
		if !ok {
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		default:
			writeCommandError(w, errTooManyWaits)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), MaxEventStream)
		defer cancel()
		if d := draining(r); d != nil {
			go func() {
				select {
				case <-d:
					cancel()
				case <-ctx.Done():
				}
			}()
		}
		ch, err := sw.Watch(ctx, org, r.PathValue("correlationId"))
		if err != nil {
			writeCommandError(w, fmt.Errorf("%w: %w", bridge.ErrStatusUnavailable, err))
			return
		}
		rc := http.NewResponseController(w)
		// The server's WriteTimeout would cut the stream: it has its own
		// bound, MaxEventStream.
		_ = rc.SetWriteDeadline(now().Add(MaxEventStream + eventKeepAlive))
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		send := func(event string, s *bridge.CommandStatus) bool {
			data := []byte("{}")
			if s != nil {
				if data, err = json.Marshal(s); err != nil {
					return false
				}
			}
			_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
			return err == nil && rc.Flush() == nil
		}
		if !send("open", nil) {
			return
		}
		keep := time.NewTicker(eventKeepAlive)
		defer keep.Stop()
		var last *bridge.CommandStatus
		var expiry <-chan time.Time
		for {
			select {
			case s, ok := <-ch:
				if !ok {
					if last != nil {
						send("end", last)
					}
					return
				}
				s.Refresh(now())
				last = s
				if !send("status", s) {
					return
				}
				if s.Final() && !s.Broadcast || s.Status == bridge.StatusExpired || s.Status == bridge.StatusFailed {
					send("end", s)
					return
				}
				if expiry == nil {
					t := time.NewTimer(s.ExpiresAt.Sub(now()))
					defer t.Stop()
					expiry = t.C
				}
			case <-expiry:
				last.Refresh(now())
				send("status", last)
				send("end", last)
				return
			case <-keep.C:
				if _, err := fmt.Fprint(w, ": keep-alive "+strconv.FormatInt(now().Unix(), 10)+"\n\n"); err != nil || rc.Flush() != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	})
}
