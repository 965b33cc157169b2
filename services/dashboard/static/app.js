// Shoal dashboard: one server-sent event stream (/api/stream) feeds every page.
// Pages: #/ (nodes and apps), #/app/NS/NAME, #/node/ID, #/events. No library, no CDN.
"use strict";

const S = {
  hello: null, state: null, series: {}, events: [], connected: false,
  history: {}, logs: {}, lastRevision: {},
};
const MAX_EVENTS = 500;

// -- helpers ------------------------------------------------------------------------
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const $ = (sel) => document.querySelector(sel);

function mem(bytes) {
  if (bytes == null) return "-";
  const units = ["B", "Ki", "Mi", "Gi", "Ti"];
  let v = bytes, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)) + units[i];
}
const cpu = (c) => (c == null ? "-" : (+c).toFixed(c < 1 ? 2 : 1));
function ago(ts) {
  if (!ts) return "-";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return Math.round(s) + "s";
  if (s < 3600) return Math.round(s / 60) + "m";
  if (s < 86400) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
const time = (ts) => new Date(ts * 1000).toLocaleTimeString();
const phase = (p) => `<span class="phase phase-${esc(p)}" data-testid="phase">${esc(p)}</span>`;
const appHref = (ns, name) => `#/app/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;
const nodeHref = (id) => `#/node/${encodeURIComponent(id)}`;

// A line chart as SVG: points are [ts, rps, errors/s, p50 ms, p99 ms].
function chart(points, columns, { w = 120, h = 28, spark = true, unit = "" } = {}) {
  const colors = ["#2563eb", "#c62828", "#b26b00"];
  const pts = points || [];
  let max = 0;
  for (const p of pts) for (const c of columns) max = Math.max(max, p[c]);
  const top = max > 0 ? max * 1.1 : 1;
  const n = Math.max(pts.length - 1, 1);
  const pad = spark ? 1 : 14;
  const lines = columns.map((c, i) => {
    const xy = pts.map((p, j) => {
      const x = pad + (j / n) * (w - 2 * pad);
      const y = h - pad - (p[c] / top) * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    return `<polyline points="${xy}" stroke="${colors[i % colors.length]}"/>`;
  }).join("");
  const label = spark ? "" :
    `<text x="2" y="10">${esc(max.toFixed(max < 10 ? 2 : 0))}${esc(unit)}</text>` +
    `<text x="2" y="${h - 2}">0</text>`;
  const cls = spark ? "spark" : "chart";
  return `<svg class="${cls}" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img">${label}${lines}</svg>`;
}

function bar(used, requested, capacity) {
  const pct = (v) => Math.min(100, capacity > 0 && v ? (100 * v) / capacity : 0).toFixed(1);
  return `<span class="bar" title="used / requested / capacity">` +
    `<span class="req" style="width:${pct(requested)}%"></span>` +
    `<span class="use" style="width:${pct(used)}%"></span></span>`;
}

// -- actions ------------------------------------------------------------------------
let pending = null;

function ask(text, body, withReplicas) {
  pending = body;
  $("#confirm-text").textContent = text;
  const label = $("#confirm-input-label");
  label.hidden = !withReplicas;
  if (withReplicas) $("#confirm-input").value = body.replicas;
  $("#confirm").hidden = false;
  (withReplicas ? $("#confirm-input") : $("#confirm-ok")).focus();
}

function showResult(result) {
  const el = document.createElement("div");
  el.className = "result";
  el.dataset.ok = String(!!result.ok);
  el.dataset.testid = "result";
  const errors = (result.errors || []).map((e) => `<li>${esc(e)}</li>`).join("");
  el.innerHTML = `<strong>${result.ok ? "Done" : "Not done"}:</strong> ${esc(result.message)}` +
    (errors ? `<ul>${errors}</ul>` : "");
  const box = $("#results");
  box.prepend(el);
  while (box.children.length > 4) box.lastChild.remove();
  setTimeout(() => el.remove(), 15000);
}

async function send(body) {
  let result;
  try {
    const resp = await fetch("/api/action", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    result = await resp.json();
  } catch (err) {
    result = { ok: false, message: `${body.action}: the dashboard did not answer (${err})` };
  }
  showResult(result);
}

$("#confirm-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = pending;
  pending = null;
  $("#confirm").hidden = true;
  if (!body) return;
  if (body.action === "scale") body.replicas = parseInt($("#confirm-input").value, 10);
  send(body);
});
$("#confirm-cancel").addEventListener("click", () => { pending = null; $("#confirm").hidden = true; });

const CONFIRM = {
  scale: (b) => `Scale ${b.namespace}/${b.name} to how many replicas?`,
  undo: (b) => `Roll ${b.namespace}/${b.name} back to its previous revision?`,
  promote: (b) => `Promote the canary of ${b.namespace}/${b.name} to a full rollout?`,
  abort: (b) => `Abort the rollout of ${b.namespace}/${b.name}?`,
  delete: (b) => `Delete ${b.namespace}/${b.name} and all its replicas?`,
  cordon: (b) => `Cordon node ${b.node} (no new replicas)?`,
  uncordon: (b) => `Uncordon node ${b.node}?`,
  drain: (b) => `Drain node ${b.node} (move every replica away)?`,
};

document.addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  const body = { action: btn.dataset.action };
  if (btn.dataset.node) body.node = btn.dataset.node;
  if (btn.dataset.ns) { body.namespace = btn.dataset.ns; body.name = btn.dataset.name; }
  if (body.action === "scale") body.replicas = parseInt(btn.dataset.replicas || "1", 10);
  ask(CONFIRM[body.action](body), body, body.action === "scale");
});

function appButtons(a) {
  const attrs = `data-ns="${esc(a.namespace)}" data-name="${esc(a.name)}"`;
  return `<span class="actions">` +
    `<button data-action="scale" ${attrs} data-replicas="${a.desired}">Scale</button>` +
    `<button data-action="undo" ${attrs}>Undo</button>` +
    `<button data-action="promote" ${attrs}>Promote</button>` +
    `<button data-action="abort" ${attrs}>Abort</button>` +
    `<button data-action="delete" class="danger" ${attrs}>Delete</button></span>`;
}
function nodeButtons(n) {
  const a = `data-node="${esc(n.node)}"`;
  return `<span class="actions">` +
    (n.schedulable ? `<button data-action="cordon" ${a}>Cordon</button>`
      : `<button data-action="uncordon" ${a}>Uncordon</button>`) +
    `<button data-action="drain" class="danger" ${a}>Drain</button></span>`;
}

// -- pages --------------------------------------------------------------------------
function nodesTable(nodes) {
  if (!nodes.length) return `<p class="muted">No node has joined.</p>`;
  const rows = nodes.map((n) => {
    const used = n.used || {};
    const st = n.cordon ? (n.cordon.drain ? "draining" : "cordoned") : "schedulable";
    return `<tr data-node="${esc(n.node)}">
      <td><a href="${nodeHref(n.node)}">${esc(n.node)}</a><div class="muted">${esc(n.address)}</div></td>
      <td>${phase(n.status)}${n.reason ? `<div class="reason">${esc(n.reason)}</div>` : ""}</td>
      <td>${esc(st)}</td>
      <td>${bar(used.cpu, n.requested.cpu, n.capacity.cpu)}${cpu(used.cpu)} used · ${cpu(n.requested.cpu)} req / ${cpu(n.capacity.cpu)}</td>
      <td>${bar(used.memory, n.requested.memory, n.capacity.memory)}${mem(used.memory)} used · ${mem(n.requested.memory)} req / ${mem(n.capacity.memory)}</td>
      <td class="num" data-testid="replicas">${n.replicas}</td>
      <td>${ago(n.heartbeat)}</td>
      <td>${nodeButtons(n)}</td></tr>`;
  }).join("");
  return `<table class="nodes"><thead><tr><th>Node</th><th>Status</th><th>Scheduling</th>
    <th>CPU (cores)</th><th>Memory</th><th>Replicas</th><th>Heartbeat</th><th></th></tr></thead>
    <tbody>${rows}</tbody></table>`;
}

function last(points, i) { return points && points.length ? points[points.length - 1][i] : 0; }

function appsTable(apps) {
  if (!apps.length) return `<p class="muted">No apps. Try <code>shoal apply -f configs/demo.yaml</code>.</p>`;
  const rows = apps.map((a) => {
    const pts = S.series[a.key] || [];
    return `<tr data-app="${esc(a.key)}">
      <td><a href="${appHref(a.namespace, a.name)}">${esc(a.key)}</a><div class="muted">${esc(a.image)}</div></td>
      <td class="num">${a.revision}</td>
      <td class="num" data-testid="ready">${a.ready}/${a.desired}</td>
      <td>${phase(a.phase)}${a.reason ? `<div class="reason" data-testid="reason">${esc(a.reason)}</div>` : ""}</td>
      <td>${chart(pts, [1])} <span class="num">${last(pts, 1).toFixed(1)}/s</span></td>
      <td>${chart(pts, [2])} <span class="num">${last(pts, 2).toFixed(1)}/s</span></td>
      <td>${chart(pts, [4])} <span class="num">${last(pts, 4).toFixed(0)} ms</span></td>
      <td>${appButtons(a)}</td></tr>`;
  }).join("");
  return `<table class="apps"><thead><tr><th>App</th><th>Rev</th><th>Ready</th><th>Phase</th>
    <th>Requests</th><th>Errors (5xx)</th><th>Latency p99</th><th></th></tr></thead>
    <tbody>${rows}</tbody></table>`;
}

function overviewPage() {
  const st = S.state;
  const down = st.services.filter((s) => s.status !== "online");
  return `<h1>Cluster</h1>
    <h2>Nodes</h2>${nodesTable(st.nodes)}
    <h2>Apps</h2>${appsTable(st.apps)}
    <h2>Services</h2><p class="muted">${st.services.filter((s) => s.status === "online").map(
      (s) => esc(s.service + (s.leader ? " (leader)" : ""))).join(" · ") || "none online"}
    ${down.length ? ` · offline: ${down.map((s) => esc(s.service)).join(", ")}` : ""}</p>`;
}

function replicaRows(reps, withNode) {
  return reps.map((r) => `<tr data-replica="${esc(r.id)}">
    <td>${esc(r.id)}</td>${withNode ? "" : `<td><a href="${appHref(r.namespace, r.app)}">${esc(r.key)}</a></td>`}
    <td class="num">${r.revision}</td>
    <td>${phase(r.phase)}${r.reason ? ` <span class="muted">${esc(r.reason)}</span>` : ""}</td>
    <td data-testid="health">${phase(r.ready ? "ready" : "not_ready")}${r.health === "ready" ? "" : ` <span class="muted">${esc(r.health)}</span>`}</td>
    <td class="num" data-testid="restarts">${r.restarts}</td>
    <td class="muted">${esc(Object.values(r.endpoints).join(", "))}</td>
    <td>${r.started_at ? ago(r.started_at) : "-"}</td></tr>`).join("");
}
function replicaTable(reps, withNode) {
  return `<table class="replicas"><thead><tr><th>Replica</th>${withNode ? "" : "<th>App</th>"}<th>Rev</th><th>Phase</th>
    <th>Health</th><th>Restarts</th><th>Endpoints</th><th>Up</th></tr></thead>
    <tbody>${replicaRows(reps, withNode)}</tbody></table>`;
}

function eventRows(events) {
  if (!events.length) return `<p class="muted">No events yet.</p>`;
  return `<table class="events"><thead><tr><th>Time</th><th>Kind</th><th>Object</th><th>Message</th></tr></thead><tbody>` +
    events.slice().reverse().slice(0, 200).map((e) => {
      const obj = e.app ? `<a href="${appHref(e.namespace || "default", e.app)}">${esc((e.namespace || "default") + "/" + e.app)}</a>`
        : e.node ? `<a href="${nodeHref(e.node)}">${esc(e.node)}</a>` : "";
      return `<tr class="sev-${esc(e.severity)}" data-seq="${e.seq}"><td>${time(e.ts)}</td><td>${esc(e.kind)}</td>
        <td>${obj}${e.replica ? ` <span class="muted">${esc(e.replica)}</span>` : ""}</td><td>${esc(e.message)}</td></tr>`;
    }).join("") + `</tbody></table>`;
}

function historyBlock(key) {
  const h = S.history[key];
  if (!h) return `<p class="muted">Loading history…</p>`;
  if (h.error) return `<p class="reason">${esc(h.error)}</p>`;
  const rows = h.revisions.slice().reverse().map((r) => `<tr data-revision="${r.revision}">
    <td class="num">${r.revision}${r.current ? " (current)" : ""}</td><td>${time(r.created)}</td>
    <td>${esc(r.image)}</td><td>${esc(r.source)}</td><td>${esc(r.status)}</td>
    <td><ul class="diff">${r.changes.map((c) => `<li>${esc(c)}</li>`).join("")}</ul></td></tr>`).join("");
  return `<table class="history"><thead><tr><th>Revision</th><th>Created</th><th>Image</th><th>Source</th>
    <th>Status</th><th>Changes from the previous revision</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function logsBlock(key) {
  const l = S.logs[key];
  if (!l) return `<p class="muted">Loading logs…</p>`;
  if (l.error) return `<p class="reason">${esc(l.error)}</p>`;
  const names = Object.keys(l.replicas);
  if (!names.length) return `<p class="muted">No running replica.</p>`;
  const text = names.map((r) => l.replicas[r].map((line) => `${r.slice(-8)} | ${line}`).join("\n")).join("\n");
  const missing = l.missing.length ? `<p class="muted">No answer from ${esc(l.missing.join(", "))}</p>` : "";
  return `<pre class="logs" data-testid="logs">${esc(text) || "(no lines)"}</pre>${missing}`;
}

async function load(kind, key, url) {
  try {
    const resp = await fetch(url);
    S[kind][key] = await resp.json();
  } catch (err) {
    S[kind][key] = { error: String(err) };
  }
  render();
}

function appPage(ns, name) {
  const key = `${ns}/${name}`;
  const a = S.state.apps.find((x) => x.key === key);
  if (!a) return `<h1>${esc(key)}</h1><p class="muted">No such app (deleted, or not applied yet).</p>`;
  if (S.lastRevision[key] !== a.revision) {
    S.lastRevision[key] = a.revision;
    load("history", key, `/api/app/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/history`);
    if (!S.logs[key]) refreshLogs(ns, name);
  }
  const pts = S.series[key] || [];
  const reps = S.state.replicas.filter((r) => r.key === key);
  const byNode = {};
  for (const r of reps) (byNode[r.node] = byNode[r.node] || []).push(r);
  const groups = Object.keys(byNode).sort().map((n) => `<div class="node-group" data-group="${esc(n)}">
    <h3><a href="${nodeHref(n)}">${esc(n)}</a> <span class="muted">${byNode[n].length} replica(s)</span></h3>
    ${replicaTable(byNode[n], true)}</div>`).join("") || `<p class="muted">No replica reported.</p>`;
  const evs = S.events.filter((e) => e.app === name && (e.namespace || "default") === ns);
  const vs = a.versions.map((v) => `rev ${v.revision}: ${v.replicas}${v.weight != null ? ` (weight ${v.weight})` : ""}`).join(", ");
  return `<h1 data-app-page="${esc(key)}">${esc(key)}</h1>
    <div class="card"><dl class="summary">
      <dt>Phase</dt><dd>${phase(a.phase)}${a.reason ? ` <span class="reason" data-testid="reason">${esc(a.reason)}</span>` : ""}</dd>
      <dt>Revision</dt><dd>${a.revision}</dd>
      <dt>Ready</dt><dd data-testid="ready">${a.ready}/${a.desired}</dd>
      <dt>Versions</dt><dd>${esc(vs)}</dd>
      <dt>Image</dt><dd>${esc(a.image)}</dd>
      <dt>Route</dt><dd>${esc(a.route || "-")}</dd>
      <dt>Autoscale</dt><dd>${a.autoscale ? esc(`${a.autoscale.min}-${a.autoscale.max} ${a.autoscale.reason}`) : "-"}</dd>
    </dl><p>${appButtons(a)}</p></div>
    <h2>Traffic, last ${Math.round(pts.length / 60) || "<1"} min</h2>
    <div class="charts">
      <figure>${chart(pts, [1], { w: 360, h: 120, spark: false, unit: "/s" })}<figcaption>Requests per second</figcaption></figure>
      <figure>${chart(pts, [2], { w: 360, h: 120, spark: false, unit: "/s" })}<figcaption>5xx errors per second</figcaption></figure>
      <figure>${chart(pts, [3, 4], { w: 360, h: 120, spark: false, unit: " ms" })}<figcaption>Latency p50 (blue), p99 (red)</figcaption></figure>
    </div>
    <h2>Replicas by node</h2>${groups}
    <h2>Revision history</h2>${historyBlock(key)}
    <h2>Events</h2>${eventRows(evs)}
    <h2>Log tail <button id="logs-refresh" data-ns="${esc(ns)}" data-name="${esc(name)}">Refresh</button></h2>${logsBlock(key)}`;
}

function refreshLogs(ns, name) {
  load("logs", `${ns}/${name}`, `/api/app/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/logs?tail=100`);
}
document.addEventListener("click", (ev) => {
  const btn = ev.target.closest("#logs-refresh");
  if (btn) refreshLogs(btn.dataset.ns, btn.dataset.name);
});

function nodePage(id) {
  const n = S.state.nodes.find((x) => x.node === id);
  if (!n) return `<h1>${esc(id)}</h1><p class="muted">No such node.</p>`;
  const reps = S.state.replicas.filter((r) => r.node === id);
  const labels = Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "-";
  return `<h1 data-node-page="${esc(id)}">Node ${esc(id)}</h1>${nodesTable([n])}
    <div class="card"><dl class="summary"><dt>Labels</dt><dd>${esc(labels)}</dd>
    <dt>Version</dt><dd>${esc(n.version || "-")}</dd>
    <dt>Cordon</dt><dd>${n.cordon ? esc(`${n.cordon.drain ? "draining" : "cordoned"} ${n.cordon.reason}`) : "-"}</dd></dl></div>
    <h2>Replicas</h2>${reps.length ? replicaTable(reps, false) : `<p class="muted">No replica on this node.</p>`}`;
}

function eventsPage() {
  return `<h1>Events</h1>${eventRows(S.events)}`;
}

function render() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.nav === (parts[0] === "events" ? "events" : "overview"));
  }
  if (!S.state) return;
  let html;
  if (parts[0] === "app" && parts.length >= 3) html = appPage(parts[1], parts[2]);
  else if (parts[0] === "node" && parts[1]) html = nodePage(parts[1]);
  else if (parts[0] === "events") html = eventsPage();
  else html = overviewPage();
  $("#view").innerHTML = html;
}
window.addEventListener("hashchange", render);

// -- the stream ---------------------------------------------------------------------
function setConn(state, text) {
  const el = $("#conn");
  el.dataset.state = state;
  el.textContent = text;
}

let frame = 0;
function renderSoon() {
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => setConn("live", "live"));
  source.addEventListener("error", () => setConn("lost", "reconnecting…"));
  source.addEventListener("hello", (ev) => {
    S.hello = JSON.parse(ev.data);
    $("#cluster").textContent = `prefix ${S.hello.prefix} · ${S.hello.version}`;
    $("#role").textContent = S.hello.role.text;
    $("#role").dataset.readOnly = String(S.hello.role.read_only);
  });
  source.addEventListener("state", (ev) => { S.state = JSON.parse(ev.data); renderSoon(); });
  source.addEventListener("series", (ev) => { S.series = JSON.parse(ev.data).apps; renderSoon(); });
  source.addEventListener("events", (ev) => { S.events = JSON.parse(ev.data); renderSoon(); });
  source.addEventListener("event", (ev) => {
    S.events.push(JSON.parse(ev.data));
    if (S.events.length > MAX_EVENTS) S.events.splice(0, S.events.length - MAX_EVENTS);
    renderSoon();
  });
}
connect();
render();
