package api

import (
	_ "embed"
	"net/http"
)

// OpenAPI is the OpenAPI 3.1 description of the HTTP API (openapi.yaml):
// every route, body, status code and error. A test checks it against the
// routes NewHandler registers and its examples against its schemas.
//
//go:embed openapi.yaml
var OpenAPI []byte

// serveOpenAPI serves GET /openapi.yaml, open like /healthz: the
// description holds nothing secret and tools fetch it without a token.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(OpenAPI)
}
