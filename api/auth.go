package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// AuthConfig is where the API's bearer tokens come from. Both may be set;
// their tokens add up. With neither set the command routes are open and the
// bridge logs a WARN at start.
type AuthConfig struct {
	Tokens     string `env:"HTTP_AUTH_TOKENS" desc:"bearer tokens for the command routes, comma-separated; token=org1|org2 limits a token to those orgs (403 for others)" secret:"true"`
	TokensFile string `env:"HTTP_AUTH_TOKENS_FILE" desc:"file with more tokens, one entry per line in the HTTP_AUTH_TOKENS syntax (# comments), e.g. a mounted Kubernetes Secret"`
}

// realm is the realm of the WWW-Authenticate challenge.
const realm = "nr-bridge"

// Auth checks bearer tokens on the command routes. A nil *Auth, or one with
// no tokens, lets every request through. It is safe for concurrent use.
type Auth struct {
	entries []authEntry
	orgID   string // ORG_ID, the org of the short routes without {orgId}
	log     *slog.Logger
}

// authEntry is one token, kept only as its SHA-256 so that comparing takes
// the same time whatever the token's length.
type authEntry struct {
	sum  [sha256.Size]byte
	orgs []string // nil: every org
}

// NewAuth loads the tokens of cfg. orgID is ORG_ID (may be empty): the org
// that routes without an {orgId} in their path act on. A file that cannot
// be read, a file without tokens, an org that breaks the ID rule or a token
// listed twice fail with an error naming the variable (never the token).
// With no tokens at all it logs a WARN that the API is unauthenticated.
func NewAuth(cfg AuthConfig, orgID string, log *slog.Logger) (*Auth, error) {
	a := &Auth{orgID: orgID, log: log.With("component", "http")}
	seen := map[[sha256.Size]byte]bool{}
	add := func(variable, text string) (int, error) {
		n := 0
		for i, raw := range strings.Split(text, ",") {
			raw = strings.TrimSpace(raw)
			if raw == "" {
				continue
			}
			e, err := parseAuthEntry(raw)
			if err != nil {
				return n, fmt.Errorf("%s: entry %d: %w", variable, i+1, err)
			}
			if seen[e.sum] {
				return n, fmt.Errorf("%s: entry %d: a token is listed twice", variable, i+1)
			}
			seen[e.sum] = true
			a.entries = append(a.entries, e)
			n++
		}
		return n, nil
	}
	if _, err := add("HTTP_AUTH_TOKENS", cfg.Tokens); err != nil {
		return nil, err
	}
	if cfg.TokensFile != "" {
		b, err := os.ReadFile(cfg.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("HTTP_AUTH_TOKENS_FILE: %w", err)
		}
		total := 0
		sc := bufio.NewScanner(bytes.NewReader(b))
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			n, err := add(fmt.Sprintf("HTTP_AUTH_TOKENS_FILE %s line %d", cfg.TokensFile, line), text)
			if err != nil {
				return nil, err
			}
			total += n
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("HTTP_AUTH_TOKENS_FILE %s: %w", cfg.TokensFile, err)
		}
		if total == 0 {
			// An empty mounted secret must not silently open the API.
			return nil, fmt.Errorf("HTTP_AUTH_TOKENS_FILE %s: no tokens in the file", cfg.TokensFile)
		}
	}
	if len(a.entries) == 0 {
		a.log.Warn("HTTP API is unauthenticated: anyone who reaches it can send commands; set HTTP_AUTH_TOKENS or HTTP_AUTH_TOKENS_FILE")
	}
	return a, nil
}

// parseAuthEntry reads `token` or `token=org1|org2`. The scope follows the
// last '='; an entry ending in '=' (base64 padding) has no scope.
func parseAuthEntry(s string) (authEntry, error) {
	token, scope := s, ""
	if i := strings.LastIndexByte(s, '='); i >= 0 && i < len(s)-1 {
		token, scope = s[:i], s[i+1:]
	}
	if token == "" {
		return authEntry{}, errors.New("empty token")
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return authEntry{}, errors.New("a token must be printable ASCII without spaces")
		}
	}
	e := authEntry{sum: sha256.Sum256([]byte(token))}
	if scope != "" {
		for _, org := range strings.Split(scope, "|") {
			if !bridge.ValidID(org) {
				return authEntry{}, fmt.Errorf("org %q: want 1 to %d characters of A-Z a-z 0-9 _ -", org, bridge.MaxIDLen)
			}
			e.orgs = append(e.orgs, org)
		}
	}
	return e, nil
}

// Enabled reports whether any token is configured.
func (a *Auth) Enabled() bool { return a != nil && len(a.entries) > 0 }

// lookup returns the entry whose token is presented, or nil. It hashes the
// presented token and compares it with every entry without an early exit,
// so the time taken says nothing about which token, or how much of one,
// matched.
func (a *Auth) lookup(presented string) *authEntry {
	sum := sha256.Sum256([]byte(presented))
	match := -1
	for i := range a.entries {
		eq := subtle.ConstantTimeCompare(sum[:], a.entries[i].sum[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return nil
	}
	return &a.entries[match]
}

// RequireToken wraps h so that a request needs `Authorization: Bearer
// <token>` with one of auth's tokens: missing or wrong gives 401 with a
// WWW-Authenticate challenge, a token scoped to other orgs 403. The org is
// the {orgId} path value, else (when h is a ServeMux, as NewHandler mounts
// it) the {orgId} segment of the route h would serve, else ORG_ID. With a
// nil auth or no tokens h is returned as is.
func RequireToken(auth *Auth, h http.Handler) http.Handler {
	if !auth.Enabled() {
		return h
	}
	mux, _ := h.(*http.ServeMux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		org := r.PathValue("orgId")
		if org == "" && mux != nil {
			_, pattern := mux.Handler(r)
			if pattern != "" {
				// The request counter then names the route even when the
				// request is refused here, before h routes it.
				r.Pattern = pattern
				org = pathWildcard(pattern, r.URL, "orgId")
			}
		}
		if org == "" {
			org = auth.orgID
		}
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <token>", "")
			return
		}
		e := auth.lookup(token)
		if e == nil {
			auth.log.Debug("HTTP request with an invalid token", "remote", r.RemoteAddr, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid bearer token", "")
			return
		}
		if e.orgs != nil && (org == "" || !slices.Contains(e.orgs, org)) {
			auth.log.Debug("HTTP request with a token scoped to other orgs", "remote", r.RemoteAddr, "org", org)
			writeError(w, http.StatusForbidden, fmt.Sprintf("token not allowed for org %q", org), "")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bearerToken returns the token of an `Authorization: Bearer <token>`
// header; the scheme is case-insensitive (RFC 9110).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// pathWildcard returns the (unescaped) path segment that the wildcard
// {name} of a ServeMux pattern matched in u, or "".
func pathWildcard(pattern string, u *url.URL, name string) string {
	if _, p, ok := strings.Cut(pattern, " "); ok {
		pattern = p
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:] // drop a host
	}
	want := "{" + name + "}"
	segs := strings.Split(u.EscapedPath(), "/")
	for i, p := range strings.Split(pattern, "/") {
		if p == want && i < len(segs) {
			v, err := url.PathUnescape(segs[i])
			if err != nil {
				return ""
			}
			return v
		}
	}
	return ""
}
