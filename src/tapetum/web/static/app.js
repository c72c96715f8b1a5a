// Tapetum dashboard: plain JS over the REST API. Every value from the API is put into the page
// with textContent (never innerHTML), so data cannot inject markup or script.
"use strict";

const TOKEN_KEY = "tapetum.token";
const SEVERITY = { 1: "high", 2: "medium", 3: "low" };

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function showError(msg) {
  const box = document.getElementById("error");
  box.textContent = msg;
  box.hidden = false;
}

async function api(path, options = {}) {
  const headers = Object.assign({ "Authorization": "Bearer " + token() }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("not logged in");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(resp.status + ": " + detail);
  }
  return body;
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function link(href, text) { return el("a", text, { href }); }

function row(tbody, cells, cls) {
  const tr = el("tr");
  if (cls) tr.className = cls;
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
  return tr;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "").replace("Z", "") : ""; }
function sev(n) { return el("span", SEVERITY[n] || n, { class: "sev" + n }); }
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; n = Number(n || 0);
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
}

function lineChart(node, label, xs, ys, color) {
  clear(node);
  if (typeof uPlot === "undefined") { node.textContent = "chart library missing"; return; }
  const width = Math.max(300, node.clientWidth || 520);
  new uPlot({
    width, height: 220,
    series: [{}, { label, stroke: color, fill: color + "33", width: 1.5 }],
    axes: [{}, { size: 60 }],
  }, [xs, ys], node);
}

// ---- pages ------------------------------------------------------------------------------------

async function pageOverview() {
  const [ov, tl] = await Promise.all([api("/api/stats/overview"), api("/api/stats/timeline?buckets=60")]);
  const totals = document.getElementById("totals");
  for (const [k, v] of Object.entries(ov.totals)) {
    const c = el("div", null, { class: "card" }); c.appendChild(el("b", v)); c.appendChild(el("span", k));
    totals.appendChild(c);
  }
  const xs = tl.start_ns.map((t) => t / 1e9);
  lineChart(document.getElementById("traffic-chart"), "flows", xs, tl.flows, "#3b6fd8");
  lineChart(document.getElementById("alerts-chart"), "alerts", xs, tl.alerts, "#d83b3b");
  const stages = document.getElementById("stages");
  const max = Math.max(1, ...Object.values(ov.incidents_by_stage));
  for (const [stage, n] of Object.entries(ov.incidents_by_stage)) {
    const bar = el("div", null, { class: "bar" });
    bar.appendChild(el("span", stage, { class: "label" }));
    const fill = el("span", null, { class: "fill" }); fill.style.width = (300 * n / max) + "px";
    bar.appendChild(fill); bar.appendChild(el("span", n));
    stages.appendChild(bar);
  }
  const tb = document.querySelector("#top-entities tbody");
  for (const e of ov.top_entities) {
    row(tb, [link("/entities/" + encodeURIComponent(e.entity), e.entity), e.incidents, e.alerts, sev(e.worst_severity), when(e.last_seen)]);
  }
}

let incidentOffset = 0;
async function pageIncidents() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams(location.search);
  for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;
  const load = async () => {
    const q = new URLSearchParams();
    for (const e of form.elements) if (e.name && e.value) q.set(e.name, e.value);
    q.set("limit", "50"); q.set("offset", String(incidentOffset));
    const data = await api("/api/incidents?" + q.toString());
    document.getElementById("count").textContent = data.total + " incident(s)";
    const tb = document.querySelector("#incident-table tbody"); clear(tb);
    for (const i of data.items) {
      row(tb, [when(i.last_seen), sev(i.severity), i.stage, link("/entities/" + encodeURIComponent(i.entity), i.entity),
        link("/incidents/" + encodeURIComponent(i.incident_id), i.title), i.alert_count, Number(i.confidence).toFixed(2)]);
    }
    document.getElementById("prev").disabled = incidentOffset === 0;
    document.getElementById("next").disabled = incidentOffset + 50 >= data.total;
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); incidentOffset = 0; load().catch((e) => showError(e.message)); });
  document.getElementById("prev").addEventListener("click", () => { incidentOffset = Math.max(0, incidentOffset - 50); load().catch((e) => showError(e.message)); });
  document.getElementById("next").addEventListener("click", () => { incidentOffset += 50; load().catch((e) => showError(e.message)); });
  await load();
}

async function pageIncident(id) {
  const inc = await api("/api/incidents/" + encodeURIComponent(id));
  document.getElementById("title").textContent = inc.title;
  const meta = document.getElementById("meta"); clear(meta);
  meta.append("Severity ", sev(inc.severity), " · stage " + inc.stage + " · confidence " + Number(inc.confidence).toFixed(2) +
    " · " + when(inc.first_seen) + " – " + when(inc.last_seen) + " · entity ",
    link("/entities/" + encodeURIComponent(inc.entity), inc.entity),
    " · ATT&CK " + (inc.mitre_technique_id || []).join(", "));
  document.getElementById("summary").textContent = inc.summary;
  const vl = document.getElementById("verdicts"); clear(vl);
  for (const v of inc.verdicts || []) {
    vl.appendChild(el("li", v.verdict + " by " + v.analyst + (v.note ? ": " + v.note : "") + (v.suppression_id ? " (suppression " + v.suppression_id + ")" : ""), { class: "verdict-item" }));
  }
  const at = document.querySelector("#actions tbody"); clear(at);
  const resp = inc.response || {};
  if (!resp.available) row(at, ["response module not available", "", "", "", ""]);
  // Recorded actions can be approved or reverted; planned ones are what the playbooks would do.
  const actions = [...(resp.recorded || []).map((a) => [a, true]), ...(resp.planned || []).map((a) => [a, false])];
  if (resp.available && actions.length === 0) row(at, ["no playbook matches this incident", "", "", "", ""]);
  for (const [a, recorded] of actions) {
    const btns = el("span", recorded ? null : "not recorded yet");
    if (recorded && a.state === "pending-approval") {
      const b = el("button", "Approve", { type: "button" });
      b.addEventListener("click", () => act(a.action_id, "approve", id));
      btns.appendChild(b);
    }
    if (recorded && a.state === "applied") {
      const b = el("button", "Revert", { type: "button" });
      b.addEventListener("click", () => act(a.action_id, "revert", id));
      btns.appendChild(b);
    }
    row(at, [a.description || (a.kind + " " + a.target), a.mode, a.state, a.playbook, btns], "action");
  }
  const tl = document.querySelector("#timeline tbody"); clear(tl);
  for (const a of inc.alerts) {
    row(tl, [when(a.first_seen), when(a.last_seen), a.signature, sev(a.severity), Number(a.score).toFixed(2), a.explanation]);
  }
  const ev = inc.evidence, counts = inc.evidence_counts;
  for (const k of ["flows", "dns", "tls"]) {
    document.getElementById(k + "-count").textContent = "(" + counts[k] + (counts[k] > ev[k].length ? ", first " + ev[k].length + " shown" : "") + ")";
  }
  const fb = document.querySelector("#ev-flows tbody"); clear(fb);
  for (const f of ev.flows) row(fb, [when(f.start), f.src_ip + ":" + f.src_port, f.dest_ip + ":" + f.dest_port, f.proto, f.service, bytes(f.bytes_toserver) + " / " + bytes(f.bytes_toclient), f.conn_state], f.linked ? "linked" : "");
  const db = document.querySelector("#ev-dns tbody"); clear(db);
  for (const d of ev.dns) row(db, [when(d.ts), d.src_ip, d.query, d.qtype, d.rcode, (d.answers || []).join(", ")], d.linked ? "linked" : "");
  const tb = document.querySelector("#ev-tls tbody"); clear(tb);
  for (const t of ev.tls) row(tb, [when(t.ts), t.src_ip, t.dest_ip + ":" + t.dest_port, t.sni, t.subject, t.issuerdn, t.ja4], t.linked ? "linked" : "");
}

async function act(actionId, what, incidentId) {
  try {
    await api("/api/actions/" + encodeURIComponent(actionId) + "/" + what, { method: "POST" });
    await pageIncident(incidentId);
  } catch (e) { showError(e.message); }
}

function setupVerdicts(id) {
  for (const b of document.querySelectorAll("button.verdict")) {
    b.addEventListener("click", async () => {
      try {
        const body = { verdict: b.dataset.verdict, note: document.getElementById("verdict-note").value,
          analyst: "dashboard", suppress: document.getElementById("verdict-suppress").checked };
        await api("/api/incidents/" + encodeURIComponent(id) + "/verdict", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        await pageIncident(id);
      } catch (e) { showError(e.message); }
    });
  }
}

async function pageEntity(entity) {
  const [info, risk] = await Promise.all([
    api("/api/entities/" + encodeURIComponent(entity)),
    api("/api/entities/" + encodeURIComponent(entity) + "/risk").catch((e) => ({ error: e.message })),
  ]);
  const rb = document.getElementById("risk");
  if (risk.error) rb.textContent = "Risk not available: " + risk.error;
  else {
    rb.appendChild(el("p", "Score " + Number(risk.score).toFixed(0) + " / 100 — " + risk.level, { class: "level-" + risk.level }));
    const ul = el("ul"); for (const r of risk.reasons || []) ul.appendChild(el("li", r)); rb.appendChild(ul);
    for (const n of risk.likely_next || []) rb.appendChild(el("p", "Likely next: " + n.stage + " (" + n.technique + ") — " + n.why));
    if (risk.history && risk.history.length) {
      lineChart(document.getElementById("risk-chart"), "risk", risk.history.map((h) => h[0] / 1e9), risk.history.map((h) => h[1]), "#c25e00");
    }
  }
  const t = info.traffic;
  document.getElementById("traffic").textContent = t.flows + " flows, " + bytes(t.bytes_out) + " out, " + bytes(t.bytes_in) + " in, " + t.peers + " peers, " + when(t.first_seen) + " – " + when(t.last_seen);
  document.getElementById("users").textContent = (info.users || []).join(", ") || "none seen";
  const bl = document.getElementById("baseline");
  for (const a of info.alerts) {
    const box = el("div"); box.appendChild(el("h3", a.signature + " at " + when(a.ts)));
    box.appendChild(el("p", a.explanation));
    const table = el("table"); const head = el("tr"); for (const h of ["Feature", "Now (observed)", "Baseline"]) head.appendChild(el("th", h));
    table.appendChild(head);
    const obs = a.observed || {}, base = a.baseline || {};
    for (const k of new Set([...Object.keys(obs), ...Object.keys(base)])) row(table, [k, obs[k], base[k]]);
    box.appendChild(table); bl.appendChild(box);
  }
  const tb = document.querySelector("#entity-incidents tbody");
  for (const i of info.incidents) row(tb, [when(i.ts), sev(i.severity), i.stage, link("/incidents/" + encodeURIComponent(i.incident_id), i.title), i.alert_count]);
}

const SEARCH_COLUMNS = {
  flows: ["start", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "service", "bytes_toserver", "bytes_toclient", "conn_state"],
  dns: ["ts", "src_ip", "dest_ip", "query", "qtype", "rcode", "answers"],
  tls: ["ts", "src_ip", "dest_ip", "dest_port", "sni", "version", "ja4", "subject", "self_signed"],
};
const SEARCH_FILTERS = { flows: ["ip", "port", "since", "until"], dns: ["ip", "port", "query", "since", "until"], tls: ["ip", "port", "sni", "since", "until"] };

async function pageSearch() {
  const form = document.getElementById("search-form");
  const run = async () => {
    const kind = form.elements.kind.value;
    const q = new URLSearchParams({ limit: "200" });
    for (const f of SEARCH_FILTERS[kind]) if (form.elements[f].value) q.set(f, form.elements[f].value);
    const data = await api("/api/" + kind + "?" + q.toString());
    document.getElementById("count").textContent = data.total + " record(s)" + (data.total > data.items.length ? ", first " + data.items.length + " shown" : "");
    const table = document.getElementById("results");
    const head = table.querySelector("thead"); clear(head); const hr = el("tr");
    for (const c of SEARCH_COLUMNS[kind]) hr.appendChild(el("th", c)); head.appendChild(hr);
    const tb = table.querySelector("tbody"); clear(tb);
    for (const r of data.items) row(tb, SEARCH_COLUMNS[kind].map((c) => Array.isArray(r[c]) ? r[c].join(", ") : (c === "ts" || c === "start" ? when(r[c]) : r[c])));
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); run().catch((e) => showError(e.message)); });
  await run();
}

async function pageDetectors() {
  const data = await api("/api/detectors");
  const tb = document.querySelector("#detectors tbody");
  for (const d of data.detectors) {
    const pre = el("details"); pre.appendChild(el("summary", "show")); pre.appendChild(el("pre", JSON.stringify(d.config, null, 1)));
    row(tb, [d.name, d.enabled ? "yes" : "no", d.alerts, when(d.last_alert), pre]);
  }
}

function setupLogin() {
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = document.getElementById("token").value.trim();
    const resp = await fetch("/api/stats/overview", { headers: { "Authorization": "Bearer " + t } });
    if (!resp.ok) { showError("That token was refused (" + resp.status + ")."); return; }
    sessionStorage.setItem(TOKEN_KEY, t);
    const next = new URLSearchParams(location.search).get("next");
    // Only same-site paths: an open redirect would hand the user to another site.
    location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page, ident = document.body.dataset.ident;
  document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.href = "/login"; });
  if (page === "login") { setupLogin(); return; }
  if (!token()) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); return; }
  const pages = { overview: pageOverview, incidents: pageIncidents, incident: pageIncident, entity: pageEntity, search: pageSearch, detectors: pageDetectors };
  if (page === "incident") setupVerdicts(ident);
  const fn = pages[page];
  if (fn) fn(ident).catch((e) => showError(e.message));
});
