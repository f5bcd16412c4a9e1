package api

import (
	"encoding/json"
	"net/http"

	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// errorBody is every error response: {"error": "...", "field": "..."}.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// writeJSON marshals v before writing the header, so a marshal failure is a
// clean 500 instead of a half-written response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"internal error encoding the response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes {"error": msg, "field": field} with status; msg goes
// through bridge.RedactURLs, as it may echo a connection error.
func writeError(w http.ResponseWriter, status int, msg, field string) {
	writeJSON(w, status, errorBody{Error: redact.URLs(msg), Field: field})
}
