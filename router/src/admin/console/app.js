// Switchyard console: polls the admin API with the bearer token kept in
// this tab's session storage and renders it. Polling rather than an event
// stream: EventSource cannot send an Authorization header, and the token
// must never be put in a URL.
//
// Every value from the router is written as text (textContent), never as
// markup: region names, reasons and refusals come from configs and regions.
"use strict";

const TOKEN_KEY = "switchyard.token";
const VIEW_KEY = "switchyard.view";
const STATUS_EVERY_MS = 500;
const SERIES_EVERY_MS = 1000;

const state = {
  status: null,
  samples: [],
  lastStatusAt: 0,
  timers: [],
  busy: false,
};

// ---------- small DOM helpers ----------

function $(sel) { return document.querySelector(sel); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms >= 1000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms) + " ms";
}

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function badge(text, kind) { return el("span", { class: "badge " + kind }, text); }

// ---------- token ----------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// `#token=…` signs in; `&view=ramps` (or alone) opens a view. Both leave the
// address bar at once, the token out of the history too.
function takeTokenFromFragment() {
  const token = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  const view = /(?:^#|&)view=([a-z]+)/.exec(location.hash);
  if (view) sessionStorage.setItem(VIEW_KEY, view[1]);
  if (token) sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(token[1]));
  if (token || view) history.replaceState(null, "", location.pathname);
}

// ---------- admin API ----------

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* a text answer */ }
  if (resp.status === 401) signedOut("The token was refused (401). Sign in again.");
  return { status: resp.status, statusText: resp.statusText, text, json };
}

// ---------- sign in / out ----------

function showLogin(message) {
  $("#app").hidden = true;
  $("#signout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  setConn("not signed in", "");
  $("#where").textContent = "";
}

function signedOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  state.status = null;
  state.samples = [];
  showLogin(message);
}

async function signIn() {
  if (!token()) { showLogin(); return; }
  let r;
  try { r = await api("GET", "/admin/v1/status"); } catch (e) {
    showLogin("The router did not answer: " + e.message);
    return;
  }
  if (r.status !== 200 || !r.json) {
    if (r.status !== 401) showLogin("Status answered " + r.status + ": " + r.text);
    return;
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  onStatus(r.json);
  pollSeries();
  state.timers.push(setInterval(pollStatus, STATUS_EVERY_MS));
  state.timers.push(setInterval(pollSeries, SERIES_EVERY_MS));
  state.timers.push(setInterval(showFreshness, 250));
}

function setConn(text, kind) {
  const c = $("#conn");
  c.textContent = text;
  c.className = "conn " + kind;
}

function showFreshness() {
  if (!state.lastStatusAt) return;
  const age = Date.now() - state.lastStatusAt;
  if (age < 2000) setConn("live", "live");
  else setConn("no answer for " + Math.round(age / 1000) + " s", age < 10000 ? "stale" : "down");
}

// ---------- polling ----------

async function pollStatus() {
  if (!token()) return;
  try {
    const r = await api("GET", "/admin/v1/status");
    if (r.status === 200 && r.json) onStatus(r.json);
  } catch (_) { /* shown by showFreshness */ }
}

async function pollSeries() {
  if (!token()) return;
  const since = state.samples.length ? state.samples[state.samples.length - 1].at_ms : 0;
  try {
    const r = await api("GET", "/admin/v1/series?since_ms=" + since);
    if (r.status !== 200 || !r.json) return;
    state.samples = state.samples.concat(r.json.samples).slice(-300);
    if (currentView() === "traffic") renderTraffic();
    if (currentView() === "regions" && state.status) renderRegions(state.status);
  } catch (_) { /* shown by showFreshness */ }
}

function onStatus(doc) {
  state.status = doc;
  state.lastStatusAt = Date.now();
  showFreshness();
  $("#where").textContent = doc.config + " · policy " + doc.policy +
    (doc.fleet ? " · fleet" : "");
  // Forms being filled in are left alone; tables follow the router.
  renderRegions(doc);
  renderRamps(doc);
  renderOwnership(doc);
}

// ---------- views ----------

function currentView() { return sessionStorage.getItem(VIEW_KEY) || "regions"; }

function showView(name) {
  sessionStorage.setItem(VIEW_KEY, name);
  for (const b of document.querySelectorAll(".tabs button")) {
    b.setAttribute("aria-selected", b.dataset.view === name ? "true" : "false");
  }
  for (const v of document.querySelectorAll(".view")) {
    v.classList.toggle("active", v.dataset.view === name);
  }
  if (name === "traffic") renderTraffic();
}

function latestSample(region) {
  for (let i = state.samples.length - 1; i >= 0; i--) {
    const hit = state.samples[i].regions.find(([n]) => n === region);
    if (hit) return hit[1];
  }
  return null;
}

function renderRegions(doc) {
  const body = $("#regions-table tbody");
  // A row whose dial input has focus is not rebuilt under the operator's hands.
  const focused = document.activeElement && body.contains(document.activeElement)
    ? document.activeElement.closest("tr").dataset.region : null;
  const names = Object.keys(doc.regions);
  for (const row of Array.from(body.rows)) {
    if (!names.includes(row.dataset.region)) row.remove();
  }
  let healthy = 0;
  for (const name of names) {
    const r = doc.regions[name];
    if (r.healthy && !r.ejected) healthy++;
    if (name === focused) continue;
    const sample = latestSample(name);
    const ejection = r.ejected
      ? (r.ejection
        ? [badge("ejected", "bad"), " ", r.ejection.reason, " · ", r.ejection.left_s + " s left"]
        : [badge("ejected", "bad")])
      : (r.ejections ? ["no (" + r.ejections + " before)"] : ["no"]);
    const rate = r.rate
      ? Math.floor(r.rate.tokens) + " / " + r.rate.burst + " (" + r.rate.share_rps.toFixed(0) + " rps)"
      : "unlimited";
    const row = el("tr", { "data-region": name },
      el("th", { scope: "row" }, name, el("div", { class: "muted" }, r.type + (r.role && r.role !== "unknown" ? " · " + r.role : ""))),
      el("td", {}, r.zone || "–"),
      el("td", { class: "health" }, r.healthy ? badge("healthy", "ok") : badge("down", "bad"),
        r.healthy ? null : el("div", { class: "muted" }, (r.endpoints.find((e) => e.reason) || {}).reason || "")),
      el("td", {}, r.lag_known ? fmtMs(r.lag_ms) : "unknown"),
      el("td", { class: "dial" }, r.dial + " %"),
      el("td", { class: "ejection wrap" }, ejection),
      el("td", {}, r.draining ? badge("draining", "warn") : "no"),
      el("td", {}, rate),
      el("td", {}, String(r.inflight)),
      el("td", {}, sample ? (sample.read_rps + sample.write_rps).toFixed(1) : "–"),
      el("td", {}, sample && sample.p99_ms !== null ? fmtMs(sample.p99_ms) : "–"),
      el("td", { class: "wrap" }, r.drift ? [badge("drift", "warn"), " ", r.drift_reasons.join("; ")] : "none"),
      el("td", {}, regionActions(name, r)),
    );
    const old = Array.from(body.rows).find((x) => x.dataset.region === name);
    if (old) old.replaceWith(row); else body.append(row);
  }
  $("#regions-summary").textContent = healthy + " of " + names.length +
    " regions healthy and not ejected · " + doc.inflight + " requests in flight" +
    (doc.connections ? " · " + doc.connections.open + " client connections (max " + doc.connections.max + ")" : "");
}

function regionActions(name, r) {
  const dial = el("form", {
    class: "dial-form",
    onsubmit: (ev) => {
      ev.preventDefault();
      const percent = Number(ev.target.percent.value);
      confirmThen("Set the dial of " + name + " to " + percent + " %?", () =>
        act("PUT", "/admin/v1/regions/" + encodeURIComponent(name) + "/dial", { percent }));
    },
  },
  el("input", { name: "percent", type: "number", min: 0, max: 100, step: "any", value: r.dial, "aria-label": "dial of " + name }),
  el("button", { type: "submit" }, "Set dial"));
  const drain = r.draining
    ? el("button", { type: "button", onclick: () => confirmThen("Undrain " + name + "? It takes new requests again.", () =>
      act("POST", "/admin/v1/regions/" + encodeURIComponent(name) + "/undrain")) }, "Undrain")
    : el("button", { type: "button", onclick: () => confirmThen("Drain " + name + "? It takes no new requests; in-flight ones finish.", () =>
      act("POST", "/admin/v1/regions/" + encodeURIComponent(name) + "/drain")) }, "Drain");
  return [dial, drain];
}

function renderRamps(doc) {
  const box = $("#ramps");
  const names = Object.keys(doc.ramps || {});
  box.replaceChildren();
  if (!names.length) { box.append(el("p", { class: "muted" }, "No ramps are configured.")); return; }
  for (const name of names) {
    const ramp = doc.ramps[name];
    const steps = el("ol", { class: "steps", "aria-label": "steps" });
    ramp.steps.forEach((s, i) => {
      const cls = i < ramp.step_index ? "done" : i === ramp.step_index ? "current" : "";
      steps.append(el("li", { class: cls }, s));
    });
    const held = ramp.held_s !== null && ramp.held_s !== undefined
      ? [el("progress", { max: ramp.hold_s, value: Math.min(ramp.held_s, ramp.hold_s) }), " held " + ramp.held_s + " of " + ramp.hold_s + " s"]
      : ["hold " + ramp.hold_s + " s"];
    const gates = ramp.gates
      ? el("dl", { class: "facts" }, Object.entries(ramp.gates).flatMap(([k, v]) =>
        [el("dt", {}, k), el("dd", {}, gateValue(k, v))]))
      : el("p", { class: "muted" }, "No gate reading yet.");
    const timeline = el("ol", { class: "timeline", "aria-label": "history" });
    for (const ev of ramp.history || []) {
      const what = String(ev.what);
      const cls = /halt|breach/i.test(what) ? "halt" : /down/i.test(what) ? "down" : "";
      timeline.append(el("li", { class: cls }, el("time", {}, fmtTime(ev.at_ms)), what));
    }
    const stateKind = ramp.state === "halted" ? "bad" : ramp.state === "running" ? "ok" : "warn";
    box.append(el("article", { class: "ramp", "data-ramp": name },
      el("div", { class: "ramp-head" },
        el("h3", {}, name), " → ", el("strong", {}, ramp.region),
        badge(ramp.state, stateKind),
        ramp.stepping_down ? badge("stepping down", "bad") : null,
        el("span", {}, "dial " + ramp.dial + " %"),
        el("span", {}, held),
        ramp.reason ? el("span", { class: "error" }, ramp.reason) : null),
      steps,
      el("div", {}, ["start", "pause", "abort"].map((a) =>
        el("button", { type: "button", onclick: () => confirmThen(a[0].toUpperCase() + a.slice(1) + " the ramp " + name + "?", () =>
          act("POST", "/admin/v1/ramps/" + encodeURIComponent(name) + "/" + a)) }, a[0].toUpperCase() + a.slice(1)))),
      el("h4", {}, "Gates"), gates,
      el("h4", {}, "History (newest first)"),
      timeline.children.length ? timeline : el("p", { class: "muted" }, "Nothing yet."),
    ));
  }
}

// Gate readings as an operator reads them: rates in percent, times in ms,
// ratios to two places.
function gateValue(key, v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v !== "number") return String(v);
  if (/rate$/.test(key) && key !== "burn_rate") return (v * 100).toFixed(2) + " %";
  if (/_ms$/.test(key)) return fmtMs(v);
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function renderOwnership(doc) {
  const body = $("#owners-table tbody");
  body.replaceChildren();
  for (const [p, o] of Object.entries(doc.owners)) {
    body.append(el("tr", { "data-partition": p },
      el("th", { scope: "row" }, p), el("td", {}, o.region), el("td", {}, String(o.epoch)),
      el("td", {}, o.writes_from_ms ? fmtTime(o.writes_from_ms) : "–")));
  }
  const form = $("#promote-form");
  fillSelect(form.partition, ["*"].concat(Object.keys(doc.owners)));
  fillSelect(form.to, Object.keys(doc.regions));
  const hist = $("#promotions-table tbody");
  hist.replaceChildren();
  for (const p of doc.promotions || []) {
    hist.append(el("tr", {},
      el("td", {}, fmtTime(p.at_ms)), el("td", {}, p.partition), el("td", {}, p.from), el("td", {}, p.to),
      el("td", {}, p.from_epoch + " → " + p.to_epoch), el("td", {}, String(p.applied_position)),
      el("td", { class: "wrap" }, p.reason + (p.forced ? " (forced)" : ""))));
  }
  if (!hist.rows.length) hist.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No promotions yet.")));
  const log = $("#oplog");
  log.replaceChildren();
  const facts = doc.oplog ? [
    ["writable", doc.oplog.writable ? "yes" : "NO: writes are refused"],
    ["queue", doc.oplog.queued + " of " + doc.oplog.queue],
    ["fsync", doc.oplog.fsync],
    ["edge", doc.oplog.edge_id],
    ["directory", doc.oplog.dir],
  ] : [["op log", "not configured"]];
  if (doc.oplog && doc.oplog.nats) {
    facts.push(["NATS", doc.oplog.nats.url + " stream " + doc.oplog.nats.stream]);
    facts.push(["NATS backlog", doc.oplog.nats.backlog_records + " records, " + doc.oplog.nats.backlog_bytes + " bytes"]);
  }
  for (const [k, v] of facts) log.append(el("dt", {}, k), el("dd", {}, v));
}

function fillSelect(select, values) {
  const current = select.value;
  const have = Array.from(select.options).map((o) => o.value);
  if (have.join("\n") === values.join("\n")) return;
  select.replaceChildren(...values.map((v) => el("option", { value: v }, v)));
  if (values.includes(current)) select.value = current;
}

// ---------- charts ----------

const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#4d4d4d"];

function renderTraffic() {
  const samples = state.samples;
  const names = [];
  for (const s of samples) for (const [n] of s.regions) if (!names.includes(n)) names.push(n);
  const pick = (f) => (s, n) => { const r = s.regions.find(([x]) => x === n); return r ? f(r[1]) : null; };
  const lines = (fields) => names.flatMap((n, i) => fields.map(([label, f, dash]) => ({
    name: n + (label ? " " + label : ""),
    color: COLORS[i % COLORS.length],
    dash,
    points: samples.map((s) => [s.at_ms, pick(f)(s, n)]),
  })));
  lineChart($("#chart-rps"), lines([["read", (r) => r.read_rps, ""], ["write", (r) => r.write_rps, "5 3"]]), 1, (v) => v.toFixed(v < 10 ? 1 : 0));
  lineChart($("#chart-errors"), lines([["", (r) => r.error_rate * 100, ""]]), 1, (v) => v.toFixed(v < 10 ? 1 : 0) + " %");
  lineChart($("#chart-p99"), lines([["", (r) => r.p99_ms, ""]]), 1, (v) => fmtMs(v));
}

// `floor`: the least top of the scale, so that a quiet chart reads as quiet.
function lineChart(box, series, floor, fmt) {
  const W = 640, H = 220, L = 56, R = 10, T = 10, B = 26;
  const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  box.replaceChildren();
  if (!pts.length) { box.append(el("p", { class: "muted" }, "No samples yet.")); return; }
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]), t0 + 1000);
  const vmax = Math.max(Math.max(...pts.map((p) => p[1])) * 1.1, floor);
  const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  for (let i = 0; i <= 4; i++) {
    const v = vmax * i / 4;
    root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  const span = Math.round((t1 - t0) / 1000);
  root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
    svg("text", { x: L, y: H - 8 }, "−" + span + " s"), svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, "now"));
  for (const s of series) {
    let d = "", pen = false;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    }
    if (d) root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.6, "stroke-dasharray": s.dash || "none" }, svg("title", {}, s.name)));
  }
  box.append(root, el("div", { class: "legend" }, series.map((s) => {
    // Through the CSSOM: the page's CSP refuses style attributes.
    const key = el("span", { class: s.dash ? "dashed" : "" }, s.name);
    key.style.setProperty("--c", s.color);
    return key;
  })));
}

// ---------- actions ----------

let pending = null;

function confirmThen(text, action) {
  pending = action;
  $("#confirm-text").textContent = text;
  $("#confirm").hidden = false;
  $("#confirm-ok").focus();
}

async function act(method, path, body) {
  let r;
  try { r = await api(method, path, body); } catch (e) {
    showResult("The router did not answer: " + e.message, "", true);
    return null;
  }
  const ok = r.status >= 200 && r.status < 300;
  // A refusal is shown as the router wrote it, rule and all.
  const title = (ok ? "Done: " : "Refused: ") + method + " " + path + " → " + r.status + " " + r.statusText +
    (!ok && r.json && r.json.rule ? " (rule " + r.json.rule + ")" : "");
  showResult(title, r.json ? JSON.stringify(r.json, null, 2) : r.text, !ok);
  pollStatus();
  return r;
}

// A refusal's body is shown open, verbatim; a success's is folded away.
function showResult(title, body, refused) {
  const box = $("#result");
  box.hidden = false;
  box.classList.toggle("refused", refused);
  $("#result-title").textContent = title;
  $("#result-body").textContent = body;
  $("#result-details").open = refused;
}

// A promotion's dry run: what each candidate would strand. Changes nothing,
// so it asks no confirmation.
async function preview(form) {
  const out = $("#preview-out");
  const r = await api("POST", "/admin/v1/promote",
    { partition: form.partition.value, to: form.to.value, dry_run: true, force: form.force.checked });
  out.replaceChildren();
  if (r.status !== 200 || !r.json) {
    out.append(el("p", { class: "error" }, r.status + ": " + (r.json && r.json.error ? r.json.error : r.text)));
    return;
  }
  out.append(el("div", { class: "scroll" }, el("table", { id: "preview-table" },
    el("thead", {}, el("tr", {}, ["Partition", "From", "To", "Applied position", "Writes at risk",
      "Replayable", "Not replayable", "Oldest", "First ops", "Allowed"].map((h) => el("th", {}, h)))),
    el("tbody", {}, r.json.partitions.map((c) => el("tr", {},
      el("th", { scope: "row" }, c.partition), el("td", {}, c.from + " (epoch " + c.from_epoch + ")"),
      el("td", {}, c.to), el("td", {}, String(c.target_applied_position)),
      el("td", { class: c.writes_at_risk ? "dropped" : "kept" }, String(c.writes_at_risk) +
        (c.position_unknown ? " (" + c.position_unknown + " without a position)" : "")),
      el("td", {}, String(c.replayable)), el("td", {}, String(c.not_replayable)),
      el("td", {}, c.oldest_ms ? fmtTime(c.oldest_ms) : "–"),
      el("td", { class: "wrap" }, c.ops.join(" ")),
      el("td", { class: "wrap" }, c.allowed ? "yes" : ["no: ", el("strong", {}, c.rule), " ", c.reason])))))),
  el("p", { class: "muted" }, "From " + r.json.scope + " in " + r.json.took_ms + " ms; nothing changed."));
}

async function explain(form) {
  const headers = {};
  for (const line of form.headers.value.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  const req = { method: form.method.value || "GET", path: form.path.value, headers };
  if (form.client.value.trim()) req.client = form.client.value.trim();
  const out = $("#explain-out");
  const r = await api("POST", "/admin/v1/explain", req);
  out.replaceChildren();
  if (r.status !== 200 || !r.json) {
    out.append(el("p", { class: "error" }, r.status + ": " + (r.json && r.json.error ? r.json.error : r.text)));
    return;
  }
  const d = r.json;
  out.append(el("h3", {}, "Pick: " + (d.pick || "none")),
    el("p", {}, "class " + d.request.class + ", service " + (d.request.service || "–") +
      ", partition " + (d.request.partition || "–") + ", zone " + (d.request.residency_zone || "–") +
      ", policy " + d.policy + (d.owner ? ", owner " + d.owner.region + " (epoch " + d.owner.epoch + ")" : "")),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Region", "Kept", "Rule", "Why", "Score", "Rate"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.candidates.map((c) => el("tr", {},
        el("th", { scope: "row" }, c.region),
        el("td", { class: c.kept ? "kept" : "dropped" }, c.kept ? "kept" : "dropped"),
        el("td", {}, c.rule), el("td", { class: "wrap" }, c.detail || ""),
        el("td", {}, JSON.stringify(c.score)), el("td", {}, c.rate ? JSON.stringify(c.rate) : "–")))))),
    el("pre", {}, JSON.stringify({ outcome: d.outcome, fallback: d.fallback, order: d.order }, null, 2)));
}

// ---------- wiring ----------

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => showView(b.dataset.view));
  }
  showView(currentView());
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value);
    $("#token").value = "";
    signIn();
  });
  $("#signout").addEventListener("click", () => signedOut("Signed out."));
  $("#confirm-cancel").addEventListener("click", () => { pending = null; $("#confirm").hidden = true; });
  $("#confirm-ok").addEventListener("click", () => {
    const run = pending;
    pending = null;
    $("#confirm").hidden = true;
    if (run) run();
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("#confirm").hidden) $("#confirm-cancel").click();
  });
  $("#result-close").addEventListener("click", () => { $("#result").hidden = true; });
  $("#promote-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const body = { partition: f.partition.value, to: f.to.value, force: f.force.checked };
    confirmThen("Promote " + (body.partition === "*" ? "every partition" : "partition " + body.partition) +
      " to " + body.to + (body.force ? ", overriding the interlocks" : "") + "? The epoch rises and the old owner is fenced.",
    () => act("POST", "/admin/v1/promote", body));
  });
  $("#promote-preview").addEventListener("click", () => preview($("#promote-form")));
  $("#explain-form").addEventListener("submit", (ev) => { ev.preventDefault(); explain(ev.target); });
  // A `#token=` link opened in a tab that already shows the console.
  window.addEventListener("hashchange", () => {
    const signsIn = /token=/.test(location.hash);
    if (signsIn) signedOut();
    takeTokenFromFragment();
    showView(currentView());
    if (signsIn) signIn();
  });
  signIn();
});
