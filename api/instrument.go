package api

import "net/http"

// Metrics is what the API needs from the metrics package: a counter of
// served requests and the /metrics handler. internal/metrics implements it.
type Metrics interface {
	// HTTPRequest counts a served request by route pattern and status.
	HTTPRequest(route string, code int)
	// Handler serves GET /metrics.
	Handler() http.Handler
}

// unmatchedRoute is the route label of a request no pattern matched (404,
// or a redirect to the cleaned path).
const unmatchedRoute = "unmatched"

// countRequests counts every request by the ServeMux pattern that served
// it. ServeMux sets Request.Pattern on the request it is given, and the
// handlers below pass that same request on, so the pattern is known once
// h returns; nothing in between may replace the request (WithContext) or
// the label falls back to the outer pattern.
func countRequests(m Metrics, h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = unmatchedRoute
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		m.HTTPRequest(route, code)
	})
}

// statusWriter records the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
