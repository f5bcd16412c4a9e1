package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestCommandWaitLimit: with HTTP_MAX_WAITS 2, two ?wait requests wait for
// their replies and a third one at the same time is refused at once, before
// publishing, with 429, Retry-After and a JSON error; once the waits end
// their slots are free again.
func TestCommandWaitLimit(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	a := startTrackReplicaWith(t, startTrackNATS(t), mq.URL(), "waits", func(d *api.Deps) { d.MaxWaits = 2 })
	node := startSimNode(t, mq.URL(), "acme", "n1", true)

	results := make([]httpResult, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = a.do(t, http.MethodPost, "/org/acme/node/n1/cmd?wait=20s", cmdWithTTL("wait-"+strconv.Itoa(i), 60))
		}()
	}
	// Both are published, so both hold their slot.
	testserver.WaitFor(t, 10*time.Second, "two commands at the node", func() bool { return node.received() == 2 })

	res := a.do(t, http.MethodPost, "/org/acme/node/n1/cmd?wait=20s", cmdWithTTL("wait-refused", 60))
	want := "too many requests waiting for replies (HTTP_MAX_WAITS): retry later, or without ?wait and read status_url"
	if res.code != http.StatusTooManyRequests || res.header.Get("Retry-After") != strconv.Itoa(api.RetryAfter) ||
		res.header.Get("Content-Type") != "application/json" || res.body["error"] != want {
		t.Fatalf("third wait: %d %v %s, want 429 with Retry-After %d and error %q", res.code, res.header, res.raw, api.RetryAfter, want)
	}
	// Without ?wait the limit does not apply.
	if res := a.do(t, http.MethodPost, "/org/acme/node/n1/cmd", cmdWithTTL("no-wait", 60)); res.code != http.StatusAccepted {
		t.Fatalf("POST without wait: %d %s", res.code, res.raw)
	}

	node.Release()
	wg.Wait()
	for i, r := range results {
		if r.code != http.StatusOK || r.body["status"] != "replied" {
			t.Errorf("wait %d: %d %s, want 200 replied", i, r.code, r.raw)
		}
	}
	// The refused command was never published.
	if code, _ := a.statusOf(t, "acme", "wait-refused"); code != http.StatusNotFound {
		t.Errorf("status of the refused command: %d, want 404", code)
	}
	if res := a.do(t, http.MethodPost, "/org/acme/node/n1/cmd?wait=5s", cmdWithTTL("wait-after", 60)); res.code != http.StatusOK {
		t.Fatalf("wait after the others ended: %d %s, want 200", res.code, res.raw)
	}
}

// TestShutdownEndsWaits: Server.Shutdown answers a ?wait in progress at
// once (202 with the status then) instead of holding the shutdown for up to
// 30 s.
func TestShutdownEndsWaits(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	a := startTrackReplica(t, startTrackNATS(t), mq.URL(), "drain")
	node := startSimNode(t, mq.URL(), "acme", "n1", true)
	srv, err := api.Listen("127.0.0.1:0", a.h, cmdTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	type answer struct {
		code int
		body map[string]any
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Post("http://"+srv.Addr()+"/org/acme/node/n1/cmd?wait=30s", "application/json", bytes.NewReader(cmdWithTTL("drained", 60)))
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body map[string]any
		_ = json.Unmarshal(b, &body)
		got <- answer{code: resp.StatusCode, body: body}
	}()
	testserver.WaitFor(t, 10*time.Second, "the command at the node", func() bool { return node.received() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	ans := <-got
	if ans.err != nil || ans.code != http.StatusAccepted || ans.body["status"] != "published" || ans.body["correlation_id"] != "drained" {
		t.Fatalf("wait at shutdown: %d %v %v, want 202 published", ans.code, ans.body, ans.err)
	}
}
