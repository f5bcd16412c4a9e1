package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// CommandLister lists an org's command statuses (the status stores:
// natsstatus.Store, kafkastatus.Store). It serves GET
// /org/{orgId}/commands.
type CommandLister interface {
	// List returns up to limit of org's statuses, newest accepted first;
	// bridge.ErrStatusUnavailable while the store cannot answer.
	List(ctx context.Context, org string, limit int) ([]*bridge.CommandStatus, error)
}

// Bounds of ?limit on the listing routes.
const (
	DefaultListLimit = 20
	MaxListLimit     = 200
)

// errBadLimit means ?limit is not a whole number from 1 to MaxListLimit.
var errBadLimit error = &classedError{fmt.Sprintf("limit must be a whole number from 1 to %d", MaxListLimit), bridge.ErrBadRequest}

// listBody is the answer of GET /org/{orgId}/commands.
type listBody struct {
	Commands []*bridge.CommandStatus `json:"commands"`
}

// parseLimit reads ?limit: absent is DefaultListLimit.
func parseLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return DefaultListLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxListLimit {
		return 0, fmt.Errorf("limit %q: %w", v, errBadLimit)
	}
	return n, nil
}

// orgRoute checks the {orgId} of a route of the console and the listing:
// a valid ID (400), inside ORG_ID when set (403). It writes the error and
// returns false when the org is refused.
func orgRoute(w http.ResponseWriter, r *http.Request, orgID string) (string, bool) {
	org := r.PathValue("orgId")
	if err := bridge.CheckScope(bridge.Target{Org: org}, orgID); err != nil {
		writeCommandError(w, err)
		return "", false
	}
	return org, true
}

// orgListing serves a GET of an org's newest items (?limit=N): the org
// checked (orgRoute), the limit parsed (400 "field": "limit"), fetch asked,
// its error mapped like every API error (bridge.Classify; an error the
// taxonomy does not know is the backbone not answering: 503), the items
// answered with Cache-Control no-store.
func orgListing(orgID string, fetch func(ctx context.Context, org string, limit int) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		org, ok := orgRoute(w, r, orgID)
		if !ok {
			return
		}
		limit, err := parseLimit(r)
		if err != nil {
			writeCommandError(w, err)
			return
		}
		body, err := fetch(r.Context(), org, limit)
		if err != nil {
			if bridge.Classify(err).HTTPStatus == http.StatusInternalServerError {
				err = fmt.Errorf("%w: %w", bridge.ErrStatusUnavailable, err)
			}
			writeCommandError(w, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, body)
	})
}

// listCommands serves GET /org/{orgId}/commands?limit=N: the org's
// newest command statuses, each refreshed as of now (a command whose TTL
// passed reads expired even before a replica recorded it).
func listCommands(l CommandLister, orgID string, now func() time.Time) http.Handler {
	return orgListing(orgID, func(ctx context.Context, org string, limit int) (any, error) {
		sts, err := l.List(ctx, org, limit)
		if err != nil {
			return nil, err
		}
		t := now()
		for _, s := range sts {
			s.Refresh(t)
		}
		if sts == nil {
			sts = []*bridge.CommandStatus{}
		}
		return listBody{Commands: sts}, nil
	})
}
