package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nr-bridge/nr-bridge/internal/sim"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// chromiumPath finds Debian's chromium (apt package chromium, installed by
// .ci/run): under CI=true a missing browser fails the test, elsewhere it
// skips with how to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found: .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium not found: install it (apt-get install chromium) to run the console's browser tests")
	return ""
}

// consoleBridge is a bridge started in-process by run, with tokens.
type consoleBridge struct {
	addr string
}

const (
	adminToken = "console-admin-token"
	acmeToken  = "console-acme-token"
)

// startConsoleBridge runs the bridge against mq and NATS with an
// unscoped token and one scoped to acme; it stops with the test.
func startConsoleBridge(t *testing.T, environ map[string]string) *consoleBridge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	environ["HTTP_ADDR"] = addr
	environ["HTTP_AUTH_TOKENS"] = adminToken + "," + acmeToken + "=acme"
	cfg, err := loadConfig(environ)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	go func() { done <- run(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bridge stopped: %v", err)
		}
	})
	b := &consoleBridge{addr: addr}
	testserver.WaitFor(t, 30*time.Second, "bridge ready", func() bool {
		code, _ := b.get(t, "/readyz", "")
		return code == http.StatusOK
	})
	return b
}

func (b *consoleBridge) url(path string) string { return "http://" + b.addr + path }

func (b *consoleBridge) get(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.url(path), nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// commandsPublished reads the flow report's command total.
func (b *consoleBridge) commandsPublished(t *testing.T) float64 {
	t.Helper()
	code, body := b.get(t, "/console/api/flow", adminToken)
	var f struct {
		Totals struct{ Commands float64 } `json:"totals"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &f) != nil {
		t.Fatalf("flow: %d %s", code, body)
	}
	return f.Totals.Commands
}

// startFleet runs nr-sim's engine: org acme, nodes n1 and n2, answering
// commands and sending 20 events per second each until the test ends.
func startFleet(t *testing.T, mqttURL string) {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.URL, cfg.OrgPrefix, cfg.Nodes, cfg.Conns, cfg.Rate, cfg.Size = mqttURL, "acme", 2, 1, 20, 100
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = sim.Run(ctx, cfg)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// browser starts headless chromium; each chromedp.NewContext of the
// returned context is a tab with its own sessionStorage.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1400, 1000),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// tid selects an element by its data-testid.
func tid(name string) string { return `[data-testid="` + name + `"]` }

// act is one step in the page, JavaScript run in the tab.
type act = chromedp.Action[bool]

// runB runs steps in order with a deadline, failing the test with what.
func runB(t *testing.T, ctx context.Context, what string, steps ...act) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, a := range steps {
		if ok, err := chromedp.Run(c, a); err != nil || !ok {
			t.Fatalf("%s: step %d: %v (element found: %t)", what, i+1, err, ok)
		}
	}
}

// js is a step that evaluates expr, which must be true.
func js(expr string) act { return chromedp.Evaluate[bool](expr) }

func navigate(url string) act {
	nav := chromedp.Navigate(url)
	return func(ctx context.Context, t *chromedp.Target) (bool, error) {
		_, err := nav(ctx, t)
		return err == nil, err
	}
}

// click clicks the element.
func click(name string) act {
	return js(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.click(); return true })()`, tid(name)))
}

// visible waits until the element is shown (or hidden, with !want).
func visible(t *testing.T, ctx context.Context, name string, want bool) {
	t.Helper()
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.offsetParent !== null })()`, tid(name))
	testserver.WaitFor(t, 30*time.Second, fmt.Sprintf("%s visible %t", name, want), func() bool {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		v, err := chromedp.Run(c, chromedp.Evaluate[bool](expr))
		return err == nil && v == want
	})
}

// textOf reads the text of the element matching the CSS selector sel.
func textOf(ctx context.Context, sel string) (string, error) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(c, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent : "<missing>" })()`, sel)))
}

// waitText polls an element's text until cond holds (30 s).
func waitText(t *testing.T, ctx context.Context, name, what string, cond func(string) bool) string {
	t.Helper()
	var text string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		text, err = textOf(ctx, tid(name))
		if err == nil && cond(text) {
			return text
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s is %q", what, name, text)
	return ""
}

func contains(sub ...string) func(string) bool {
	return func(s string) bool {
		for _, x := range sub {
			if !strings.Contains(s, x) {
				return false
			}
		}
		return true
	}
}

// setValue sets an input's value and fires input and change, as typing
// and leaving the field would.
func setValue(name, v string) act {
	return js(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.value = %q;
		e.dispatchEvent(new Event("input")); e.dispatchEvent(new Event("change")); return true })()`, tid(name), v))
}

func setChecked(name string, on bool) act {
	return js(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.checked = %t; e.dispatchEvent(new Event("change")); return true })()`, tid(name), on))
}

// TestConsoleBrowser drives the console in headless chromium against the
// bridge (NATS), Mosquitto and a simulated fleet: the token prompt (no
// token, a wrong one), events flowing, a node command and a broadcast
// replied with their payloads, an invalid payload refused before anything
// is sent, a bad event in the dead letters with its reason, and a token
// scoped to acme seeing nothing of another org. With CONSOLE_SCREENSHOT
// set it saves a screenshot of the page there.
func TestConsoleBrowser(t *testing.T) {
	chromiumPath(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	b := startConsoleBridge(t, bridgeEnv(mq, ns.URL(), "console"))
	startFleet(t, mq.URL())
	ctx := browser(t)

	// No token: the page asks for one and shows the 401.
	runB(t, ctx, "open the console", navigate(b.url("/console")))
	visible(t, ctx, "token-input", true)
	waitText(t, ctx, "token-error", "no token", contains("401", "missing bearer token"))
	// A wrong token: 401 invalid bearer token.
	runB(t, ctx, "wrong token", setValue("token-input", "not-a-token"), click("token-save"))
	waitText(t, ctx, "token-error", "wrong token", contains("401", "invalid bearer token"))
	// The unscoped token: the prompt goes, the flow shows.
	runB(t, ctx, "admin token", setValue("token-input", adminToken), click("token-save"))
	visible(t, ctx, "token-input", false)

	t.Run("events flow", func(t *testing.T) {
		waitText(t, ctx, "rate-events", "events per second", func(s string) bool {
			v, err := strconv.ParseFloat(s, 64)
			return err == nil && v >= 5
		})
		runB(t, ctx, "connection state up", js(`document.querySelector('[data-testid="conn-state"]').dataset.state === "up"`))
		waitText(t, ctx, "conn-state", "connection states", contains("backbone up", "mqtt up", "publisher up"))
	})

	t.Run("node command replied", func(t *testing.T) {
		runB(t, ctx, "send to n1",
			setValue("cmd-org", "acme"), setValue("cmd-node", "n1"), setChecked("cmd-broadcast", false),
			setValue("cmd-type", "ping"), setValue("cmd-payload", `{"probe": 7}`), setValue("cmd-ttl", "30"),
			click("cmd-send"))
		waitText(t, ctx, "status-value", "node command status", func(s string) bool { return s == "replied" })
		waitText(t, ctx, "status-replies", "reply payload", contains("n1", `"command_type": "ping"`, `"status": "ok"`))
		waitText(t, ctx, "status-steps", "steps", contains("accepted", "published", "PUBACK reason 0", "replied"))
		waitText(t, ctx, "recent-list", "recent commands", contains("ping → n1", "replied"))
	})

	t.Run("broadcast replied by every node", func(t *testing.T) {
		runB(t, ctx, "broadcast",
			setChecked("cmd-broadcast", true), setValue("cmd-type", "hello"), setValue("cmd-payload", `{}`),
			click("cmd-send"))
		waitText(t, ctx, "status-value", "broadcast status", func(s string) bool { return s == "replied" })
		waitText(t, ctx, "status-replies", "both replies", contains("n1 at", "n2 at", `"command_type": "hello"`))
		waitText(t, ctx, "recent-list", "recent commands", contains("hello → broadcast"))
		c := testclient.ConnectMQTT(t, mq.URL(), "console-poison-shot")
		c.Publish("org/acme/node/bad.node/events", []byte(`{"poison":1}`), nil)
		waitText(t, ctx, "dlq-list", "dead letter", contains("invalid_id"))
		if p := os.Getenv("CONSOLE_SCREENSHOT"); p != "" {
			time.Sleep(2 * time.Second) // a few more chart points
			c, cancel := context.WithTimeout(ctx, 30*time.Second)
			png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("invalid payload publishes nothing", func(t *testing.T) {
		before := b.commandsPublished(t)
		runB(t, ctx, "bad payload",
			setChecked("cmd-broadcast", false), setValue("cmd-type", "ping"), setValue("cmd-payload", `{"probe": `))
		waitText(t, ctx, "payload-error", "parse error while typing", contains("not valid JSON"))
		runB(t, ctx, "send bad payload", click("cmd-send"))
		waitText(t, ctx, "cmd-error", "cmd-error", contains("payload: not valid JSON", "nothing was sent"))
		time.Sleep(500 * time.Millisecond) // a request it sent would have been published by now
		if after := b.commandsPublished(t); after != before {
			t.Errorf("commands published %v -> %v after an invalid payload", before, after)
		}
		// A server-side refusal is shown next to its field: TTL 0 is 422 ttl_sec.
		runB(t, ctx, "ttl 0", setValue("cmd-payload", `{}`), setValue("cmd-ttl", "0"), click("cmd-send"))
		waitText(t, ctx, "cmd-error", "422", contains("422", "ttl_sec"))
		if field, _ := textOf(ctx, `.field-error[data-for="ttl_sec"]`); !strings.Contains(field, "ttl_sec") {
			t.Errorf("ttl field error %q", field)
		}
		runB(t, ctx, "ttl back", setValue("cmd-ttl", "30"))
	})

	t.Run("bad event in the dead letters", func(t *testing.T) {
		c := testclient.ConnectMQTT(t, mq.URL(), "console-poison")
		c.Publish("org/acme/node/bad.node/events", []byte(`{"poison":true}`), nil)
		waitText(t, ctx, "dlq-list", "dead letter", contains("invalid_id", "org/acme/node/bad.node/events", "15 bytes", "12 bytes"))
		waitText(t, ctx, "rate-events", "still flowing", func(s string) bool { v, _ := strconv.ParseFloat(s, 64); return v > 0 })
	})

	t.Run("token scoped to acme sees nothing of other", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(ctx, chromedp.WithNewBrowserContext()) // its own sessionStorage
		defer cancel()
		// The first Run of a tab must have no deadline: it would end the tab.
		if _, err := chromedp.Run(tab, navigate(b.url("/console"))); err != nil {
			t.Fatal(err)
		}
		visible(t, tab, "token-input", true)
		runB(t, tab, "acme token", setValue("token-input", acmeToken), click("token-save"))
		visible(t, tab, "token-input", false)
		runB(t, tab, "org acme", setValue("cmd-org", "acme"))
		waitText(t, tab, "recent-list", "acme's commands", contains("ping → n1"))
		runB(t, tab, "org other", setValue("cmd-org", "other"))
		var recentErr, dlqErr string
		waitText(t, tab, "recent-list", "other's commands hidden", func(s string) bool { return s == "" })
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && (!strings.Contains(recentErr, "403") || !strings.Contains(dlqErr, "403")) {
			recentErr, _ = textOf(tab, "#recent-error")
			dlqErr, _ = textOf(tab, "#dlq-error")
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(recentErr, `403: token not allowed for org "other"`) || !strings.Contains(dlqErr, "403") {
			t.Errorf("org other with acme's token: recent %q, dead letters %q; want 403", recentErr, dlqErr)
		}
		// Sending for other is refused too, and shown.
		runB(t, tab, "send for other", setValue("cmd-node", "n1"), setValue("cmd-type", "ping"), setValue("cmd-payload", `{}`),
			click("cmd-send"))
		waitText(t, tab, "cmd-error", "403 on send", contains("403"))
	})

	t.Run("routes", func(t *testing.T) { checkConsoleRoutes(t, b) })
}

// checkConsoleRoutes checks the console's routes from Go once the browser
// test sent its commands: the listing, the dead letters, the status event
// stream and the strict headers.
func checkConsoleRoutes(t *testing.T, b *consoleBridge) {
	code, body := b.get(t, "/org/acme/commands?limit=2", acmeToken)
	var list struct {
		Commands []struct {
			CorrelationID string `json:"correlation_id"`
			Type, Status  string
			Broadcast     bool
		} `json:"commands"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Commands) != 2 {
		t.Fatalf("listing: %d %s", code, body)
	}
	if c := list.Commands[0]; c.Type != "hello" || !c.Broadcast || c.Status != "replied" {
		t.Errorf("newest command %+v, want the replied broadcast hello", c)
	}
	if c := list.Commands[1]; c.Type != "ping" || c.Broadcast || c.Status != "replied" {
		t.Errorf("second newest command %+v, want the replied ping to n1", c)
	}
	if code, body := b.get(t, "/org/other/commands", acmeToken); code != 403 {
		t.Errorf("listing of other with acme's token: %d %s", code, body)
	}
	if code, body := b.get(t, "/org/acme/commands?limit=0", acmeToken); code != 400 || !strings.Contains(body, `"field":"limit"`) {
		t.Errorf("limit 0: %d %s", code, body)
	}
	if code, body := b.get(t, "/org/acme/deadletters", acmeToken); code != 200 || !strings.Contains(body, `"reason":"invalid_id"`) || !strings.Contains(body, `"size":15`) {
		t.Errorf("dead letters: %d %s", code, body)
	}
	if code, _ := b.get(t, "/console/api/flow", ""); code != 401 {
		t.Errorf("flow without a token: %d, want 401", code)
	}

	// The status event stream of a replied node command: open, status, end.
	id := list.Commands[1].CorrelationID
	req, _ := http.NewRequest(http.MethodGet, b.url("/org/acme/commands/"+id+"/events"), nil)
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var events []string
	for sc.Scan() {
		if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, e)
		}
		if strings.HasPrefix(sc.Text(), "data: ") && !strings.Contains(sc.Text(), `"status":"replied"`) && len(events) > 1 {
			t.Errorf("event %s without the replied status: %.200s", events[len(events)-1], sc.Text())
		}
	}
	if strings.Join(events, ",") != "open,status,end" {
		t.Errorf("events %v, want open, status, end", events)
	}

	resp2, err := http.Get(b.url("/console"))
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	csp := resp2.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		resp2.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("console headers: CSP %q, nosniff %q", csp, resp2.Header.Get("X-Content-Type-Options"))
	}
}
