package api

import (
	"bytes"
	"net/http"
)

// RequireAnyToken wraps h so that a request needs a valid bearer token
// of any scope (401 without one, as RequireToken): for the console's
// bridge-wide routes, which show no org's data. With a nil auth or no
// tokens h is returned as is.
func RequireAnyToken(auth *Auth, h http.Handler) http.Handler {
	if !auth.Enabled() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <token>", "")
			return
		}
		if auth.lookup(token) == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid bearer token", "")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bytesReader serves an embedded file's bytes to http.ServeContent.
func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
