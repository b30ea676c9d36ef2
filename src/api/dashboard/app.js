// vigil's dashboard: loads GET /api/dashboard (one summary), /api/units and /api/canaries,
// then follows GET /api/stream (Server-Sent Events) and reloads what changed.
//
// Every value from the API is user input somewhere (intent reasons, event data, unit output):
// it is only ever inserted as text (textContent, createTextNode, attributes set one by one),
// never as markup. `el()` below is the only way this file makes elements.
"use strict";

const AUDIT_SHOWN = 50;
const REFRESH_EVERY_MS = 30000;

// --- the token, where reads need one ------------------------------------------------------

// The page may be opened as /#access_token=TOKEN (or ?access_token=): keep the token for this
// tab only and take it out of the address bar.
function takeToken() {
  const from = (s) => new URLSearchParams(s.replace(/^[#?]/, "")).get("access_token");
  const t = from(location.hash) || from(location.search);
  if (t) {
    sessionStorage.setItem("vigil_token", t);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("vigil_token");
}
let token = takeToken();

function withToken(path) {
  return token ? path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : path;
}

async function getJson(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401 || r.status === 403) {
    needToken();
    throw new Error("the API needs its token");
  }
  if (!r.ok) {
    const e = new Error(path + ": HTTP " + r.status);
    e.status = r.status;
    throw e;
  }
  return r.json();
}

function needToken() {
  const form = document.getElementById("token-form");
  form.hidden = false;
  setConn("token needed", "warn");
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = document.getElementById("token-input").value.trim();
  if (!v) return;
  token = v;
  sessionStorage.setItem("vigil_token", v);
  document.getElementById("token-form").hidden = true;
  connect();
});

// --- building elements as text -------------------------------------------------------------

// el("td", {class: "num"}, "text", child, ...): attributes set one by one, strings as text.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(text, kind) {
  return el("span", { class: "badge " + (kind || "") }, text);
}

function empty(text) {
  return el("p", { class: "empty" }, text);
}

function table(headers, rows) {
  return el("div", { class: "scroll" },
    el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h) =>
        el("th", { class: h.cls }, h.text)))),
      el("tbody", {}, rows)));
}

function panel(id, ...content) {
  const body = document.querySelector("#" + id + " .body");
  body.replaceChildren(...content.flat().filter((c) => c));
}

// A link only for http(s) addresses: a runbook written as `javascript:...` stays text.
function link(href, text) {
  try {
    const u = new URL(href, location.href);
    if (u.protocol === "http:" || u.protocol === "https:") {
      return el("a", { href: u.href, target: "_blank", rel: "noopener noreferrer" }, text);
    }
  } catch (_) { /* not an address: shown as text */ }
  return el("span", {}, href);
}

// --- time ----------------------------------------------------------------------------------

function human(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (d > 0) return d + "d " + (h % 24) + "h";
  if (h > 0) return h + "h " + (m % 60) + "m";
  return m + "m " + (s % 60) + "s";
}

// A countdown: its text is refreshed every second from the deadline it carries.
function countdown(seconds, prefix) {
  const e = el("span", { class: "countdown" });
  e.dataset.deadline = String(Date.now() + seconds * 1000);
  e.dataset.prefix = prefix || "";
  tickOne(e);
  return e;
}
function tickOne(e) {
  const left = (Number(e.dataset.deadline) - Date.now()) / 1000;
  e.textContent = e.dataset.prefix + human(left);
}
setInterval(() => document.querySelectorAll(".countdown").forEach(tickOne), 1000);

function localTime(rfc3339) {
  if (!rfc3339) return "";
  const d = new Date(rfc3339);
  return isNaN(d) ? String(rfc3339) : d.toLocaleString();
}
function shortTime(rfc3339) {
  const d = new Date(rfc3339);
  if (isNaN(d)) return String(rfc3339 || "");
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

// --- panels --------------------------------------------------------------------------------

function drawPlaybooks(d) {
  if (!d.playbooks.length) return panel("p-playbooks", empty("no playbooks configured"));
  const locks = d.locks.map((l) => el("div", { class: "row", "data-lock": l.name },
    el("span", {}, "lock"), el("span", { class: "name" }, l.name),
    el("span", { class: "muted" }, "held by " + l.holder), countdown(l.expires_in_s, "lease ")));
  panel("p-playbooks", table(
    [{ text: "playbook" }, { text: "mode" }, { text: "cooldown" }, { text: "runs 24h", cls: "num" }, { text: "last", cls: "hide-narrow" }],
    d.playbooks.map((p) => el("tr", { "data-playbook": p.name },
      el("td", {}, el("span", { class: "name" }, p.name), el("div", { class: "muted small" }, p.on)),
      el("td", {}, badge(p.mode, p.escalated ? "warn" : "info")),
      el("td", {}, p.cooldown_remaining_s > 0 ? countdown(p.cooldown_remaining_s) : el("span", { class: "muted" }, "ready")),
      el("td", { class: "num" }, String(p.runs_24h)),
      el("td", { class: "hide-narrow" }, p.last_result ? badge(p.last_result, p.last_result === "done" ? "ok" : (p.last_result === "running" ? "info" : "bad")) : "")))), locks);
}

function drawFlags(d) {
  const armed = d.flags.filter((f) => f.armed);
  const counting = d.flags.filter((f) => !f.armed);
  const rows = armed.map((f) => el("div", { class: "row bad", "data-flag": f.kind },
    el("span", { class: "name" }, f.kind), badge("armed", "bad"),
    countdown(f.expires_in_s || 0, "expires in "),
    el("span", {}, f.symptom_count + " symptoms"),
    el("span", { class: "reason muted" }, f.reason || "")));
  const quiet = counting.map((f) => el("div", { class: "row", "data-flag": f.kind },
    el("span", { class: "name" }, f.kind), el("span", { class: "muted" }, f.symptom_count + " symptoms in the window")));
  panel("p-flags", rows.length ? rows : empty("no escalation flags armed"), quiet);
}

function drawBudgets(d) {
  if (!d.budgets.length) return panel("p-budgets", empty("no budgets configured"));
  panel("p-budgets", d.budgets.map((b) => {
    const pct = (x) => (b.limit_s > 0 ? Math.min(100, (100 * x) / b.limit_s) : 0) + "%";
    const used = el("div", { class: "used", title: "used" });
    const reserved = el("div", { class: "reserved", title: "reserved" });
    const remaining = el("div", { class: "remaining", title: "remaining" });
    used.style.width = pct(b.used_s);
    reserved.style.width = pct(b.reserved_s);
    remaining.style.width = pct(b.remaining_s);
    return el("div", { class: "budget", "data-budget": b.name },
      el("div", {}, el("span", { class: "name" }, b.name), " ", el("span", { class: "muted" }, b.day)),
      el("div", { class: "gauge", role: "img", "aria-label": b.remaining_s + " of " + b.limit_s + " s remaining" }, used, reserved, remaining),
      el("div", { class: "legend" },
        "used " + b.used_s.toFixed(1) + " s · reserved " + b.reserved_s.toFixed(1) + " s · remaining " + b.remaining_s.toFixed(1) + " s of " + b.limit_s + " s"));
  }));
}

function drawWindows(d) {
  if (!d.windows.length) return panel("p-windows", empty("no maintenance windows configured"));
  panel("p-windows", d.windows.map((w) => el("div", { class: "row", "data-window": w.name },
    el("span", { class: "name" }, w.name),
    el("span", { class: "muted" }, w.at + " " + w.timezone),
    w.open ? badge("open", "ok") : badge("closed"),
    w.open ? el("span", {}, "closes " + w.closes_at)
      : el("span", {}, "opens " + w.opens_at + " (", countdown(w.opens_in_s || 0, "in "), ")"))));
}

function drawSources(d) {
  if (!d.sources.length) return panel("p-sources", empty("no sources configured"));
  panel("p-sources", d.sources.map((s) => el("div", { class: "row" + (s.up ? "" : " bad"), "data-source": s.source },
    el("span", { class: "name" }, s.source), el("span", { class: "muted" }, s.kind),
    s.up ? badge(s.reason ? "degraded" : "up", s.reason ? "warn" : "ok") : badge("down", "bad"),
    s.reason ? el("span", { class: "reason" }, s.reason) : null,
    el("span", { class: "muted", title: localTime(s.since) }, "since " + shortTime(s.since)))));
}

function drawInvariants(d) {
  if (!d.invariants.length) return panel("p-invariants", empty("no invariants configured"));
  const kind = { green: "ok", red: "bad" };
  panel("p-invariants", d.invariants.map((i) => el("div", { class: "row" + (i.state === "red" ? " bad" : ""), "data-invariant": i.id },
    el("span", { class: "name" }, i.id), el("span", {}, i.name),
    badge(i.state, kind[i.state]), badge(i.severity, i.severity === "critical" ? "bad" : "warn"),
    el("span", { class: "muted" }, "tier " + i.tier),
    i.runbook ? link(i.runbook, "runbook") : null,
    i.state === "red" ? el("div", { class: "violations" },
      i.violations.map((v, k) => el("div", { class: "violation details" }, i.signals[k] || JSON.stringify(v)))) : null)));
}

function drawIntents(d) {
  const states = Object.entries(d.intents);
  const chipKind = { pending: "info", running: "info", done: "ok", denied: "warn", failed: "bad", restore_failed: "bad", expired: "warn" };
  const chips = el("div", { class: "chips" }, states.length
    ? states.map(([s, n]) => badge(s + " " + n, chipKind[s]))
    : [el("span", { class: "empty" }, "no intents")]);
  // A host column only when the intents are of more than one host (a fleet's store).
  const fleet = d.latest_intents.some((i) => i.host !== d.latest_intents[0].host);
  const rows = d.latest_intents.map((i) => el("tr", { "data-intent": i.id },
    el("td", { class: "num" }, String(i.id)),
    el("td", { class: "hide-narrow", title: localTime(i.created_at) }, shortTime(i.created_at)),
    fleet ? el("td", { class: "host" }, i.host) : null,
    el("td", {}, i.intent_type),
    el("td", { class: "num" }, String(i.priority)),
    el("td", {}, badge(i.status, chipKind[i.status]), i.note ? el("div", { class: "details" }, i.note) : null),
    el("td", { class: "reason" }, i.reason)));
  panel("p-intents", chips, rows.length
    ? table([{ text: "id", cls: "num" }, { text: "created", cls: "hide-narrow" }, fleet ? { text: "host" } : null,
      { text: "type" }, { text: "pri", cls: "num" }, { text: "status" }, { text: "reason" }].filter((h) => h), rows)
    : null);
}

let auditEntries = [];
function drawAudit() {
  if (!auditEntries.length) return panel("p-audit", empty("the audit trail is empty"));
  panel("p-audit", table(
    [{ text: "time" }, { text: "event" }, { text: "intent", cls: "num" }, { text: "playbook", cls: "hide-narrow" }, { text: "details" }],
    auditEntries.map((a) => el("tr", { "data-audit": a.event },
      el("td", { title: localTime(a.ts) }, shortTime(a.ts)),
      el("td", {}, a.event),
      el("td", { class: "num" }, a.intent === null || a.intent === undefined ? "" : String(a.intent)),
      el("td", { class: "hide-narrow" }, a.playbook || ""),
      el("td", { class: "details" }, a.details === null ? "" : JSON.stringify(a.details))))));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// Two rows of bars over the same hours: events above, intents below, each on its own scale
// (events usually outnumber intents by far).
function drawChart(d) {
  const c = d.chart, n = c.hours.length;
  // Drawn at the panel's width in CSS pixels, so text is never stretched.
  const W = Math.max(240, document.querySelector("#p-chart .body").clientWidth || 720);
  const H = 180, left = 34, top = 8, band = 70, gap = 16, bw = (W - left) / n;
  const chart = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img",
    "aria-label": "events and intents per hour over the last 24 hours" });
  const rows = [["events", c.events, top], ["intents", c.intents, top + band + gap]];
  for (const [name, values, y0] of rows) {
    const max = Math.max(1, ...values);
    chart.appendChild(svg("line", { x1: left, x2: W, y1: y0 + band, y2: y0 + band }));
    chart.appendChild(svg("text", { x: 0, y: y0 + 10 }, String(max)));
    chart.appendChild(svg("text", { x: 0, y: y0 + band }, "0"));
    values.forEach((v, k) => {
      const h = (band * v) / max;
      const hour = new Date(c.hours[k]);
      chart.appendChild(svg("rect", { class: name, x: left + k * bw + 1, y: y0 + band - h, width: Math.max(1, bw - 2), height: h },
        svg("title", {}, hour.toLocaleString([], { hour: "2-digit", minute: "2-digit" }) + ": " + v + " " + name)));
    });
  }
  const every = W < 480 ? 8 : 6;
  c.hours.forEach((t, k) => {
    if (k % every === 0) {
      chart.appendChild(svg("text", { x: left + k * bw, y: H - 2 },
        new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    }
  });
  const total = (a) => a.reduce((x, y) => x + y, 0);
  panel("p-chart", chart, el("div", { class: "legend" },
    el("span", { class: "key-events" }, "■ events " + total(c.events)), " (since vigil started) · ",
    el("span", { class: "key-intents" }, "■ intents " + total(c.intents)), " per hour"));
}

// Units and canaries come from their own endpoints; one that is missing (404) or empty says so.
async function drawUnits() {
  let units;
  try { units = await getJson("/api/units"); } catch (e) { if (e.status !== 404) throw e; units = []; }
  if (!Array.isArray(units) || !units.length) return panel("p-units", empty("no units configured"));
  const kind = { running: "ok", adopted: "ok", quarantined: "bad", exhausted: "bad", failed_over: "warn", backoff: "warn", starting: "info" };
  panel("p-units", units.map((u) => {
    const q = u.state === "quarantined";
    const bundle = u.bundle || u.quarantine_bundle;
    return el("div", { class: "row" + (q ? " bad" : ""), "data-unit": u.name },
      el("span", { class: "name" }, u.name), badge(u.state, kind[u.state]),
      u.degraded ? badge("degraded", "bad") : null,
      u.configured === false ? el("span", { class: "muted" }, "no longer configured") : null,
      u.pid ? el("span", { class: "muted" }, "pid " + u.pid) : null,
      u.tier !== undefined ? el("span", { class: "muted" }, "tier " + u.tier) : null,
      u.restarts_in_window !== undefined ? el("span", {}, u.restarts_in_window + " restarts") : null,
      u.since ? el("span", { class: "muted" }, "since " + shortTime(u.since)) : null,
      u.last_error ? el("span", { class: "reason" }, u.last_error) : null,
      (q || u.degraded) && bundle ? el("div", { class: "details" }, "bundle: " + bundle) : null);
  }));
}

async function drawCanaries() {
  let canaries;
  try { canaries = await getJson("/api/canaries"); } catch (e) { if (e.status !== 404) throw e; canaries = []; }
  if (!Array.isArray(canaries) || !canaries.length) return panel("p-canaries", empty("no canaries configured"));
  panel("p-canaries", canaries.map((c) => {
    const r = c.last_run;
    const ok = r && (r.result === "promoted" || r.result === "pass" || r.result === "ok" || r.result === "done");
    return el("div", { class: "row", "data-canary": c.name },
      el("span", { class: "name" }, c.name),
      r ? badge(r.result, ok ? "ok" : "bad") : el("span", { class: "muted" }, "never run"),
      r ? el("span", { class: "muted" }, [r.mode, r.path, r.port ? "port " + r.port : null].filter(Boolean).join(" · ")) : null,
      r && r.duration_s !== undefined && r.duration_s !== null ? el("span", {}, r.duration_s.toFixed(1) + " s") : null,
      r && r.downtime_s ? el("span", {}, "downtime " + r.downtime_s.toFixed(1) + " s") : null,
      r && r.reason ? el("span", { class: "reason" }, r.reason) : null,
      c.next_allowed_in_s > 0 ? countdown(c.next_allowed_in_s, "next in ") : el("span", { class: "muted" }, "allowed now"));
  }));
}

let last = null;
function draw(d) {
  last = d;
  document.getElementById("meta").textContent = "v" + d.version + " · " + d.config + " · " + d.timezone;
  drawPlaybooks(d); drawFlags(d); drawBudgets(d); drawWindows(d); drawSources(d);
  drawInvariants(d); drawIntents(d); drawChart(d);
  auditEntries = d.audit.slice().reverse().slice(0, AUDIT_SHOWN);
  drawAudit();
}

// The chart is drawn at the panel's width: again when that changes.
window.addEventListener("resize", () => { if (last) drawChart(last); });

// --- loading, coalesced --------------------------------------------------------------------

let loading = false, again = false, soon = null;
function showError(msg) {
  const e = document.getElementById("error");
  e.hidden = !msg;
  e.textContent = msg || "";
}
async function refresh() {
  if (loading) { again = true; return; }
  loading = true;
  try {
    const [d] = await Promise.all([getJson("/api/dashboard"), drawUnits(), drawCanaries()]);
    draw(d);
    showError(null);
    document.body.dataset.loaded = String(Date.now());
  } catch (e) {
    // While the token form shows, it says what is wrong.
    if (document.getElementById("token-form").hidden) showError(String(e.message || e));
  } finally {
    loading = false;
    if (again) { again = false; refresh(); }
  }
}
// Many changes in a burst make one reload.
function refreshSoon() {
  if (soon) return;
  soon = setTimeout(() => { soon = null; refresh(); }, 100);
}
setInterval(refresh, REFRESH_EVERY_MS);

// --- the stream ----------------------------------------------------------------------------

function setConn(text, kind) {
  const c = document.getElementById("conn");
  c.textContent = text;
  c.className = "badge " + (kind || "");
}

let source = null;
function connect() {
  if (source) source.close();
  source = new EventSource(withToken("/api/stream"));
  source.addEventListener("hello", () => { setConn("live", "ok"); refresh(); });
  source.addEventListener("audit", (ev) => {
    auditEntries.unshift(JSON.parse(ev.data));
    auditEntries.length = Math.min(auditEntries.length, AUDIT_SHOWN);
    drawAudit();
    refreshSoon();
  });
  for (const kind of ["intent_stored", "sources", "unit", "canary", "lagged"]) {
    source.addEventListener(kind, refreshSoon);
  }
  // EventSource reconnects by itself after a lost connection; after a refusal (an HTTP error:
  // a wrong token, vigil starting) it gives up, so try again a little later.
  const mine = source;
  source.onerror = () => {
    if (!document.getElementById("token-form").hidden) return;
    setConn("reconnecting", "warn");
    if (mine.readyState === EventSource.CLOSED) setTimeout(() => { if (source === mine) connect(); }, 5000);
  };
}

connect();
refresh();
