package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/mqttconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
)

// openAPIDoc is api.OpenAPI as JSON values (yaml.v3 -> JSON -> the
// jsonschema package's decoding, so numbers are what a JSON client sees).
func openAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	var y any
	if err := yaml.Unmarshal(api.OpenAPI, &y); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	b, err := json.Marshal(y)
	if err != nil {
		t.Fatalf("openapi.yaml as JSON: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return doc.(map[string]any)
}

// registeredPatterns finds every ServeMux pattern the api package
// registers: the string literal of each Handle or HandleFunc call in its
// non-test files, so a new route cannot be added without this test
// seeing it.
func registeredPatterns(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			p, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			if p != "/" { // the mount point of the protected routes
				out = append(out, p)
			}
			return true
		})
	}
	slices.Sort(out)
	return out
}

// documentedPatterns lists "METHOD /path" for every operation of doc.
func documentedPatterns(doc map[string]any) []string {
	var out []string
	for path, item := range doc["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			switch method {
			case "get", "post", "put", "patch", "delete", "head", "options":
				out = append(out, strings.ToUpper(method)+" "+path)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := openAPIDoc(t)
	if v := doc["openapi"]; v != "3.1.0" {
		t.Errorf("openapi %v, want 3.1.0", v)
	}
	registered, documented := registeredPatterns(t), documentedPatterns(doc)
	if len(registered) < 10 {
		t.Fatalf("found only %d registered patterns: %v", len(registered), registered)
	}
	if !slices.Equal(registered, documented) {
		t.Fatalf("routes registered:\n  %s\ndocumented:\n  %s", strings.Join(registered, "\n  "), strings.Join(documented, "\n  "))
	}

	// Every documented operation is routed by the handler (with every
	// dependency and ORG_ID set): no 404 or 405 from the mux.
	cfg := &mqttconn.Config{URL: "tcp://127.0.0.1:1", ClientID: "openapi-test", OrgID: "acme"}
	tr := tracker.New(tracker.Config{}, cmdTestLogger(t), nil)
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close(t.Context()) })
	h := api.NewHandler(api.Deps{
		Log:      cmdTestLogger(t),
		Ready:    map[string]api.ReadyFunc{},
		Commands: bridge.NewIntake(publisher.New(cfg, cmdTestLogger(t), nil), bridge.CommandLimits{}, "acme", nil),
		Metrics:  metrics.New("nats", "test"),
		Statuses: tr,
		Lister:   noStore{},
		Console:  &api.Console{Flow: metrics.NewFlow(metrics.New("nats", "test")), Watcher: noStore{}, DeadLetters: noStore{}},
	})
	for _, p := range documented {
		method, path, _ := strings.Cut(p, " ")
		path = strings.NewReplacer("{orgId}", "acme", "{nodeId}", "n1", "{correlationId}", "c-1", "{file}", "console.js").Replace(path)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if rec.Code == http.StatusNotFound || rec.Code == http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want the route to exist", method, path, rec.Code)
		}
		op := doc["paths"].(map[string]any)[strings.SplitN(p, " ", 2)[1]].(map[string]any)[strings.ToLower(method)].(map[string]any)
		if _, ok := op["responses"].(map[string]any)[strconv.Itoa(rec.Code)]; !ok {
			t.Errorf("%s %s answered %d, which the document does not list", method, path, rec.Code)
		}
	}
}

func TestOpenAPIExamplesValidate(t *testing.T) {
	doc := openAPIDoc(t)
	c := jsonschema.NewCompiler()
	if err := c.AddResource("openapi.json", doc); err != nil {
		t.Fatal(err)
	}
	examples := doc["components"].(map[string]any)["examples"].(map[string]any)
	n := 0
	// walk visits every object with a schema and examples: media types
	// and parameters.
	var walk func(v any, ptr string)
	walk = func(v any, ptr string) {
		switch v := v.(type) {
		case map[string]any:
			if _, ok := v["schema"]; ok {
				if exs, ok := v["examples"].(map[string]any); ok {
					sch, err := c.Compile("openapi.json#" + ptr + "/schema")
					if err != nil {
						t.Fatalf("compile %s/schema: %v", ptr, err)
					}
					for name, ex := range exs {
						ex := ex.(map[string]any)
						if ref, ok := ex["$ref"].(string); ok {
							ex = examples[strings.TrimPrefix(ref, "#/components/examples/")].(map[string]any)
						}
						value, ok := ex["value"]
						if !ok {
							t.Errorf("%s example %s has no value", ptr, name)
							continue
						}
						n++
						if err := sch.Validate(value); err != nil {
							t.Errorf("%s example %s does not validate: %v", ptr, name, err)
						}
					}
				}
			}
			for k, x := range v {
				walk(x, ptr+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k))
			}
		case []any:
			for i, x := range v {
				walk(x, ptr+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc, "")
	if n < 25 {
		t.Fatalf("validated only %d examples", n)
	}
	t.Logf("%d examples valid", n)

	// The schemas are strict enough to catch a wrong document.
	sch, err := c.Compile("openapi.json#/components/schemas/CommandStatus")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{"org":"acme"}`,
		`{"org":"acme","correlation_id":"c","type":"t","topic":"x","source":"http","status":"done","issued_at":"x","expires_at":"x","accepted_at":"x"}`,
		`{"org":"acme","correlation_id":"c","type":"t","topic":"x","source":"http","status":"replied","issued_at":"x","expires_at":"x","accepted_at":"x","extra":1}`,
	} {
		v, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if sch.Validate(v) == nil {
			t.Errorf("CommandStatus schema accepts %s", bad)
		}
	}
}

// TestOpenAPIMatchesStatusDocument checks a real status document, as the
// tracker writes it, against the CommandStatus schema.
func TestOpenAPIMatchesStatusDocument(t *testing.T) {
	doc := openAPIDoc(t)
	c := jsonschema.NewCompiler()
	if err := c.AddResource("openapi.json", doc); err != nil {
		t.Fatal(err)
	}
	sch := c.MustCompile("openapi.json#/components/schemas/CommandStatus")
	now := time.Now()
	cmd, err := bridge.ParseCommand([]byte(`{"type":"reboot","version":1,"correlation_id":"c/1 é","issued_at":`+strconv.FormatInt(now.Unix(), 10)+`,"ttl_sec":60,"payload":{}}`), now, bridge.CommandLimits{})
	if err != nil {
		t.Fatal(err)
	}
	s := bridge.NewCommandStatus(bridge.Target{Org: "acme"}, cmd, bridge.SourceStream, now)
	rc := 16
	s.PublishedAt, s.ReasonCode, s.NoSubscribers = now, &rc, true
	s.AddReply(bridge.NewReply("n1", []byte(`{"ok": true}`), "application/json", now))
	s.AddReply(bridge.NewReply("n2", []byte{0xde, 0xad}, "", now))
	s.AddReply(bridge.NewReply("n3", bytes.Repeat([]byte("x"), bridge.MaxReplyPayload+1), "", now))
	s.Refresh(now)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

func TestOpenAPIServed(t *testing.T) {
	h := api.NewHandler(api.Deps{Log: cmdTestLogger(t)})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.yaml", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/yaml" || !bytes.Equal(rec.Body.Bytes(), api.OpenAPI) {
		t.Fatalf("GET /openapi.yaml: %d %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}
	if _, err := os.Stat("openapi.yaml"); err != nil {
		t.Fatal(err)
	}
}
