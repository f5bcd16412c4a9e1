// nr-bridge operator console: plain JavaScript module, no build step.
// Every request goes to the bridge's own API with the tab's bearer token.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "nr-bridge-token";
const ORG_KEY = "nr-bridge-org";

// el builds an element with text content (never HTML from the server).
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

// AuthError is a 401: the token panel asks for a token.
class AuthError extends Error {}

// api fetches path and returns {status, body}; a 401 shows the token panel.
async function api(path, opts = {}) {
  const res = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers) }));
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (res.status === 401) {
    showAuth(`401 ${res.statusText || "Unauthorized"}: ${body && body.error ? body.error : "token needed"}`);
    throw new AuthError(body && body.error);
  }
  return { status: res.status, body, res };
}

function errText(r) {
  return `${r.status}: ${r.body && r.body.error ? r.body.error : "request failed"}`;
}

function showAuth(msg) {
  $("auth").hidden = false;
  $("token-error").textContent = msg;
}

function org() { return $("cmd-org").value.trim(); }
function enc(s) { return encodeURIComponent(s); }
function fmtTime(t) { return t ? new Date(t).toLocaleTimeString() : ""; }

// ---- Send a command -------------------------------------------------------

function clearErrors() {
  $("cmd-error").textContent = "";
  for (const p of document.querySelectorAll(".field-error")) p.textContent = "";
}

function fieldError(field, msg) {
  const p = document.querySelector(`.field-error[data-for="${field}"]`);
  if (p) p.textContent = msg;
}

// checkPayload shows a parse error under the payload as the operator types.
function checkPayload() {
  try {
    JSON.parse($("cmd-payload").value);
    $("payload-error").textContent = "";
    return true;
  } catch (e) {
    $("payload-error").textContent = "not valid JSON: " + e.message;
    return false;
  }
}

let watch = null; // the AbortController of the status stream in progress

async function send(ev) {
  ev.preventDefault();
  clearErrors();
  if (!checkPayload()) {
    const msg = $("payload-error").textContent;
    $("cmd-error").textContent = "payload: " + msg + " (nothing was sent)";
    fieldError("payload", msg);
    return;
  }
  const o = org(), node = $("cmd-node").value.trim(), broadcast = $("cmd-broadcast").checked;
  if (!o) { fieldError("org", "org is required"); $("cmd-error").textContent = "org is required"; return; }
  if (!broadcast && !node) { fieldError("node", "node is required (or broadcast)"); $("cmd-error").textContent = "node is required (or broadcast)"; return; }
  sessionStorage.setItem(ORG_KEY, o);
  const ttl = parseInt($("cmd-ttl").value, 10);
  const cmd = {
    type: $("cmd-type").value.trim(),
    version: parseInt($("cmd-version").value, 10),
    correlation_id: crypto.randomUUID(),
    issued_at: Math.floor(Date.now() / 1000),
    ttl_sec: Number.isNaN(ttl) ? 0 : ttl,
    payload: JSON.parse($("cmd-payload").value),
  };
  const path = broadcast ? `/org/${enc(o)}/broadcast/cmd` : `/org/${enc(o)}/node/${enc(node)}/cmd`;
  const wait = $("cmd-wait").checked ? `?wait=${Math.min(Math.max(cmd.ttl_sec, 1), 30)}s` : "";
  startWatch(o, cmd.correlation_id, { status: "accepted", accepted_at: new Date().toISOString(), broadcast });
  let r;
  try {
    r = await api(path + wait, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(cmd) });
  } catch (e) {
    stopWatch();
    if (!(e instanceof AuthError)) $("cmd-error").textContent = "request failed: " + e.message;
    return;
  }
  if (r.status !== 200 && r.status !== 202) {
    stopWatch();
    renderStatus(null);
    const msg = errText(r);
    $("cmd-error").textContent = msg;
    if (r.body && r.body.field) fieldError(r.body.field === "ttl_sec" ? "ttl_sec" : r.body.field, msg);
    return;
  }
  if (r.status === 200) renderStatus(r.body); // replied during ?wait
  else if (r.body && r.body.no_subscribers) renderStatus(Object.assign({}, current, { status: r.body.status, no_subscribers: true }));
  loadRecent();
}

// ---- Watch a command's status ---------------------------------------------

let current = null;

function stopWatch() {
  if (watch) watch.abort();
  watch = null;
}

// startWatch shows status and follows its server-sent events until "end".
function startWatch(o, id, initial) {
  stopWatch();
  current = Object.assign({ correlation_id: id, org: o }, initial);
  renderStatus(current);
  const ctl = new AbortController();
  watch = ctl;
  streamStatus(o, id, ctl).catch(() => {});
}

async function streamStatus(o, id, ctl) {
  const res = await fetch(`/org/${enc(o)}/commands/${enc(id)}/events`, { headers: headers(), signal: ctl.signal });
  if (!res.ok || !res.body) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if ((event === "status" || event === "end") && data && watch === ctl) {
        renderStatus(JSON.parse(data));
        if (event === "end") { ctl.abort(); loadRecent(); return; }
      }
    }
  }
}

const STEPS = [
  ["accepted", "accepted_at"], ["published", "published_at"], ["replied", "replied_at"],
  ["expired", "expired_at"], ["failed", "failed_at"],
];

function renderStatus(s) {
  if (s) current = s;
  const v = $("status-value");
  v.textContent = s ? s.status : "–";
  v.className = "status " + (s ? s.status : "");
  $("status-id").textContent = s ? `${s.org || ""} ${s.node ? "node " + s.node : s.broadcast ? "broadcast" : ""} · ${s.type || ""} · ${s.correlation_id}` : "";
  const steps = $("status-steps");
  steps.replaceChildren();
  const replies = $("status-replies");
  replies.replaceChildren();
  if (!s) return;
  for (const [name, field] of STEPS) {
    if (!s[field]) continue;
    let text = `${name} ${fmtTime(s[field])}`;
    if (name === "published") {
      if (s.puback_reason_code !== undefined) text += ` · PUBACK reason ${s.puback_reason_code}`;
      if (s.no_subscribers) text += " · no_subscribers: no node is subscribed";
    }
    if (name === "failed" && s.error) text += ` · ${s.error}`;
    steps.append(el("li", text));
  }
  for (const r of s.replies || []) {
    const d = el("div");
    d.append(el("div", `${r.node} at ${fmtTime(r.received_at)} · ${r.size} bytes${r.truncated ? " (truncated)" : ""}`, "dim"));
    let body = r.payload !== undefined ? JSON.stringify(r.payload, null, 2) : r.payload_base64 ? "base64: " + r.payload_base64 : "";
    d.append(el("pre", body));
    replies.append(d);
  }
  if (s.replies_dropped) replies.append(el("p", `${s.replies_dropped} more replies not kept`, "dim"));
}

async function openStatus(o, id) {
  try {
    const r = await api(`/org/${enc(o)}/commands/${enc(id)}`);
    if (r.status !== 200) { $("recent-error").textContent = errText(r); return; }
    startWatch(o, id, r.body);
  } catch (_) { /* shown by api */ }
}

// ---- Recent commands ------------------------------------------------------

async function loadRecent() {
  const o = org(), list = $("recent-list"), errp = $("recent-error");
  if (!o) { list.replaceChildren(); errp.textContent = ""; return; }
  try {
    const r = await api(`/org/${enc(o)}/commands?limit=20`);
    if (r.status !== 200) { list.replaceChildren(); errp.textContent = errText(r); return; }
    errp.textContent = "";
    list.replaceChildren(...r.body.commands.map((s) => {
      const li = el("li");
      const b = el("button", `${fmtTime(s.accepted_at)} ${s.type} → ${s.node || "broadcast"}`, "link");
      b.type = "button";
      b.addEventListener("click", () => openStatus(o, s.correlation_id));
      li.dataset.correlationId = s.correlation_id;
      li.append(b, " ", el("span", s.status, "status " + s.status));
      return li;
    }));
  } catch (e) { if (!(e instanceof AuthError)) errp.textContent = "request failed: " + e.message; }
}

// ---- Dead letters ---------------------------------------------------------

async function loadDLQ() {
  const o = org(), list = $("dlq-list"), errp = $("dlq-error");
  if (!o) { list.replaceChildren(); errp.textContent = ""; return; }
  try {
    const r = await api(`/org/${enc(o)}/deadletters?limit=20`);
    if (r.status !== 200) { list.replaceChildren(); errp.textContent = errText(r); return; }
    errp.textContent = "";
    list.replaceChildren(...r.body.dead_letters.map((d) => {
      const li = el("li");
      li.title = d.error;
      li.append(el("span", fmtTime(d.time) + " ", "dim"), el("span", d.reason, "reason"),
        ` ${d.origin} · ${d.size} bytes${d.cut ? " (cut)" : ""}`);
      return li;
    }));
  } catch (e) { if (!(e instanceof AuthError)) errp.textContent = "request failed: " + e.message; }
}

// ---- Flow -----------------------------------------------------------------

function drawChart(history) {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (history.length < 2) return;
  const t1 = Date.parse(history[history.length - 1].t), t0 = Math.max(t1 - 5 * 60 * 1000, Date.parse(history[0].t));
  const max = Math.max(1, ...history.map((p) => Math.max(p.events, p.replies, p.dead_letters)));
  const x = (p) => ((Date.parse(p.t) - t0) / (t1 - t0)) * (c.width - 4) + 2;
  const y = (v) => c.height - 4 - (v / max) * (c.height - 16);
  for (const [key, color] of [["events", "#58a6ff"], ["replies", "#3fb950"], ["dead_letters", "#f85149"]]) {
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    history.forEach((p, i) => (i ? g.lineTo(x(p), y(p[key])) : g.moveTo(x(p), y(p[key]))));
    g.stroke();
  }
  g.fillStyle = "#8a96a3";
  g.fillText(`${max.toFixed(1)}/s`, 4, 10);
}

let orgFromServer = false;

async function loadFlow() {
  let r;
  try { r = await api("/console/api/flow"); } catch (_) { return; }
  if (r.status !== 200) return;
  const f = r.body;
  $("auth").hidden = true;
  if (f.org_id && !orgFromServer && !org()) { $("cmd-org").value = f.org_id; orgFromServer = true; loadRecent(); loadDLQ(); }
  const fix = (v) => (Math.round(v * 10) / 10).toFixed(1);
  $("rate-events").textContent = fix(f.rates.events);
  $("rate-replies").textContent = fix(f.rates.replies);
  $("rate-commands").textContent = fix(f.rates.commands);
  $("rate-dlq").textContent = fix(f.rates.dead_letters);
  $("inflight").textContent = String(f.inflight);
  const conn = $("conn"), allUp = f.parts.every((p) => p.ready);
  conn.dataset.state = allUp ? "up" : "down";
  conn.replaceChildren(...f.parts.map((p) => {
    const s = el("span", `${p.name} ${p.ready ? "up" : "down"}`, p.ready ? "up" : "down");
    if (p.reason) s.title = p.reason;
    return s;
  }));
  $("connections").replaceChildren(...f.mqtt_connections.map((c) => el("li", `${c.client_id} ${c.up ? "up" : "down"}`, c.up ? "up" : "down")));
  drawChart(f.history);
}

// ---- Start ----------------------------------------------------------------

function refreshAll() { loadFlow(); loadRecent(); loadDLQ(); }

function start() {
  $("cmd-org").value = sessionStorage.getItem(ORG_KEY) || "";
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    $("token-error").textContent = "";
    refreshAll();
  });
  $("cmd-form").addEventListener("submit", send);
  $("cmd-payload").addEventListener("input", checkPayload);
  $("cmd-broadcast").addEventListener("change", () => { $("cmd-node").disabled = $("cmd-broadcast").checked; });
  $("cmd-org").addEventListener("change", () => { sessionStorage.setItem(ORG_KEY, org()); loadRecent(); loadDLQ(); });
  refreshAll();
  setInterval(loadFlow, 1000);
  setInterval(() => { loadRecent(); loadDLQ(); }, 3000);
}

start();
