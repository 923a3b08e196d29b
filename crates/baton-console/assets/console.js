// Baton console: vanilla JavaScript, no framework, nothing from the network.
//
// The server keeps the state. A view loads its data once from /api/...,
// then applies the deltas /api/stream sends (server-sent events) and
// re-renders only the columns a delta touched, and only their first cards.
"use strict";

const view = document.getElementById("view");
const liveBadge = document.getElementById("live");
const firingCount = document.getElementById("firing-count");
const operatorBadge = document.getElementById("operator");

let me = { operator: false, why: "unknown" };
let clockOffset = 0; // server now - local now, ms
let route = { name: "", arg: "" };
let source = null;
let sourceWorkflow = undefined;
let ticker = null;
let refreshTimer = null;

// ---------- helpers ----------

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function noteNow(now) {
  const t = Date.parse(now);
  if (!Number.isNaN(t)) clockOffset = t - Date.now();
}

function serverNow() { return Date.now() + clockOffset; }

function human(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(s % 60).padStart(2, "0") + "s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h" + String(m % 60).padStart(2, "0") + "m";
  return Math.floor(h / 24) + "d" + (h % 24) + "h";
}

// An element whose text is "<age> ago", kept current by the ticker.
function since(ts, suffix) {
  if (!ts) return "—";
  return `<span class="age" data-since="${esc(ts)}" data-suffix="${esc(suffix || "")}">${esc(human(serverNow() - Date.parse(ts)))}${esc(suffix || "")}</span>`;
}

function tick() {
  const now = serverNow();
  for (const el of view.querySelectorAll("[data-since]")) {
    el.textContent = human(now - Date.parse(el.dataset.since)) + (el.dataset.suffix || "");
  }
}

function localTime(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return esc(d.toLocaleTimeString() + (Date.now() - d > 86400000 ? " " + d.toLocaleDateString() : ""));
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({ error: "not JSON (" + r.status + ")" }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  if (body && body.now) noteNow(body.now);
  return body;
}

async function postJSON(url, data) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(data || {}),
  });
  const body = await r.json().catch(() => ({ error: "not JSON (" + r.status + ")" }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function taskLink(id) {
  return id ? `<a href="#/task/${encodeURIComponent(id)}">${esc(id)}</a>` : "—";
}

function opButton(label, attrs) {
  const off = me.operator ? "" : ` disabled title="${esc(me.why)}"`;
  return `<button class="act" ${attrs}${off}>${esc(label)}</button>`;
}

function operatorBanner() {
  return me.operator ? "" : `<div class="banner" id="readonly">${esc(me.why)}</div>`;
}

// ---------- live feed ----------

function connect(workflow) {
  if (source && sourceWorkflow === workflow) return;
  if (source) source.close();
  sourceWorkflow = workflow;
  const url = "/api/stream" + (workflow ? "?workflow=" + encodeURIComponent(workflow) : "");
  source = new EventSource(url);
  source.addEventListener("hello", (e) => {
    noteNow(JSON.parse(e.data).now);
    liveBadge.className = "live on";
    liveBadge.textContent = "live";
  });
  source.addEventListener("delta", (e) => onDelta(JSON.parse(e.data)));
  source.addEventListener("reset", () => render());
  source.onerror = () => {
    liveBadge.className = "live off";
    liveBadge.textContent = "reconnecting";
  };
}

function onDelta(d) {
  noteNow(d.now);
  if (d.alerts && d.alerts.length) refreshFiringCount();
  if (route.name === "pipeline") pipelineDelta(d);
  else if (route.name === "alerts" && ((d.alerts && d.alerts.length) || d.silences_changed)) later(renderAlerts, 200);
  else if (route.name === "task") {
    const mine = (d.cards || []).some((c) => c.id === route.arg) ||
      (d.alerts || []).some((a) => a.task === route.arg);
    if (mine) later(renderTask, 300);
  }
}

function later(fn, ms) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(fn, ms);
}

async function refreshFiringCount() {
  try {
    const a = await getJSON("/api/alerts");
    firingCount.textContent = a.firing.length ? String(a.firing.length) : "";
  } catch (_) { /* shown on the next success */ }
}

// ---------- pipeline ----------

const board = {
  workflow: null,
  limit: 50,
  columns: [],          // [{column, total, stalled, by_status}]
  cards: new Map(),     // id -> card (every card of this workflow the page knows)
  workflows: [],
};

async function renderPipeline() {
  const wanted = route.arg || board.workflow || "";
  let data;
  try {
    data = await getJSON("/api/pipeline?limit=" + board.limit + (wanted ? "&workflow=" + encodeURIComponent(wanted) : ""));
  } catch (e) {
    view.innerHTML = `<p class="error">Cannot load the pipeline: ${esc(e.message)}</p>`;
    return;
  }
  if (route.name !== "pipeline") return;
  board.workflow = data.workflow;
  board.workflows = data.workflows;
  board.columns = data.columns.map((c) => ({ column: c.column, total: c.total, stalled: c.stalled, by_status: c.by_status }));
  board.cards = new Map();
  for (const c of data.columns) for (const card of c.cards) board.cards.set(card.id, card);
  view.innerHTML = `<div class="toolbar" id="workflows"></div><div class="board" id="board"></div>`;
  renderWorkflows();
  if (!board.workflow) {
    document.getElementById("board").innerHTML = `<p class="note">No tasks yet. Tasks appear here as agents create them.</p>`;
  } else {
    renderColumns(null);
  }
  connect(board.workflow || "");
}

function renderWorkflows() {
  const el = document.getElementById("workflows");
  if (!el) return;
  el.innerHTML = `<strong>Workflow</strong> ` + board.workflows.map((w) =>
    `<button class="wf${w.id === board.workflow ? " active" : ""}" data-wf="${esc(w.id)}">${esc(w.id)}
      <span class="note">${w.active}/${w.tasks}</span>${w.stalled ? ` <span class="bad">${w.stalled} stalled</span>` : ""}</button>`
  ).join(" ");
  for (const b of el.querySelectorAll("[data-wf]")) {
    b.onclick = () => { location.hash = "#/pipeline/" + encodeURIComponent(b.dataset.wf); };
  }
}

function cardHTML(c) {
  const handoff = c.handoff
    ? `<div class="handoff" data-handoff>${esc(c.handoff.from)} → ${c.handoff.to_kind === "stage" ? "stage " : ""}${esc(c.handoff.to)} · waiting ${since(c.handoff.offered_at)}</div>`
    : "";
  const alerts = c.alerts.map((a) => `<span class="chip${a.silenced ? " muted" : ""}" title="since ${esc(a.since)}">${esc(a.kind)}${a.silenced ? " (silenced)" : ""}</span>`).join("");
  const le = c.last_event;
  return `<div class="card s-${esc(c.status)}${c.stalled ? " stalled" : ""}" data-task="${esc(c.id)}" data-stalled="${c.stalled}">
    <a class="title" href="#/task/${encodeURIComponent(c.id)}" title="${esc(c.title || c.id)}">${esc(c.title || c.id)}</a>
    <div class="row"><span class="meta">${esc(c.id)}</span><span class="status">${esc(c.status)}</span></div>
    <div class="row"><span>${c.owner ? "owner <b>" + esc(c.owner) + "</b>" : '<span class="meta">unowned</span>'} · epoch ${c.epoch}</span><span class="meta">age ${since(c.created_at)}</span></div>
    <div class="meta">last: ${esc(le.kind)} by ${esc(le.agent)} · ${since(le.at, " ago")}</div>
    ${handoff}${alerts}</div>`;
}

function columnHTML(col) {
  const cards = [...board.cards.values()].filter((c) => c.column === col.column);
  cards.sort((a, b) => a.rank - b.rank || (a.id < b.id ? -1 : 1));
  const shown = cards.slice(0, board.limit);
  const stats = Object.entries(col.by_status || {}).map(([s, n]) => `${esc(s)} ${n}`).join(" · ");
  const more = col.total > shown.length
    ? `<button class="more" data-more>${col.total - shown.length} more — show more</button>` : "";
  return `<div class="head"><span>${esc(col.column)}</span><span class="n">${col.total}${col.stalled ? ` · <span class="bad">${col.stalled} stalled</span>` : ""}</span></div>
    <div class="stats">${stats}</div>${shown.map(cardHTML).join("")}${more}`;
}

// Renders the given columns (a Set of names), or all when null.
function renderColumns(which) {
  const el = document.getElementById("board");
  if (!el) return;
  const present = new Set([...el.children].map((c) => c.dataset.column));
  const want = board.columns.map((c) => c.column);
  const sameLayout = want.length === present.size && want.every((c) => present.has(c));
  if (!sameLayout) {
    el.innerHTML = want.map((c) => `<section class="column" data-column="${esc(c)}"></section>`).join("");
    which = null;
  }
  for (const col of board.columns) {
    if (which && !which.has(col.column)) continue;
    const node = el.querySelector(`[data-column="${CSS.escape(col.column)}"]`);
    if (!node) continue;
    node.innerHTML = columnHTML(col);
    const more = node.querySelector("[data-more]");
    if (more) more.onclick = () => { board.limit += 50; renderPipeline(); };
  }
}

function pipelineDelta(d) {
  if (d.workflows) { board.workflows = d.workflows; renderWorkflows(); }
  if (!board.workflow) {
    if (d.workflows && d.workflows.length) renderPipeline();
    return;
  }
  if (d.workflow !== board.workflow) return;
  const touched = new Set();
  for (const card of d.cards || []) {
    const old = board.cards.get(card.id);
    if (old) touched.add(old.column);
    touched.add(card.column);
    board.cards.set(card.id, card);
  }
  for (const id of d.removed || []) {
    const old = board.cards.get(id);
    if (old) { touched.add(old.column); board.cards.delete(id); }
  }
  if (d.columns) {
    const known = new Set(board.columns.map((c) => c.column));
    board.columns = d.columns.map((c) => ({ column: c.column, total: c.total, stalled: c.stalled, by_status: c.by_status }));
    if (board.columns.some((c) => !known.has(c.column)) || board.columns.length !== known.size) touched.clear();
  }
  renderColumns(touched.size ? touched : null);
  // A column that lost cards shows fewer than it could: fetch its next ones.
  for (const col of board.columns) {
    const shown = [...board.cards.values()].filter((c) => c.column === col.column).length;
    if (shown < Math.min(col.total, board.limit)) { later(renderPipeline, 500); break; }
  }
}

// ---------- alerts ----------

function alertRow(a, actions) {
  // A resolution shows the fault report it resolves (what was expected,
  // when it was due, the last event then), and how it was resolved.
  const f = a.fired || a;
  const le = f.last_event ? `${esc(f.last_event.kind)} by ${esc(f.last_event.agent)} · ${localTime(f.last_event.at)}` : "—";
  const silence = a.silenced_by ? `<span class="chip muted">silenced (${esc(a.silenced_by)})</span>` : "";
  const act = actions && a.task && !a.silenced_by
    ? opButton("Silence 1h", `data-silence-task="${esc(a.task)}" data-silence-kind="${esc(a.kind)}"`) : "";
  const summary = a.fired ? `${esc(f.summary)}<div class="ok">${esc(a.summary)}</div>` : esc(a.summary);
  return `<tr class="${a.state === "firing" && a.lifecycle === "condition" ? "firing" : ""}" data-alert="${esc(a.id)}" data-task="${esc(a.task || "")}" data-kind="${esc(a.kind)}">
    <td><b>${esc(a.kind)}</b><br><span class="note">${esc(a.severity)}${a.notification ? " · re-notified ×" + a.notification : ""}</span></td>
    <td>${a.task ? taskLink(a.task) : '<span class="note">Baton itself</span>'}<br><span class="note">${esc(a.workflow || "")}${a.stage ? " / " + esc(a.stage) : ""}</span></td>
    <td>${f.agents.map(esc).join(", ") || "—"}</td>
    <td>${esc(f.expected) || "—"}</td>
    <td>${f.due_at ? localTime(f.due_at) + "<br>" + since(f.due_at, " ago") : "—"}</td>
    <td>${le}</td>
    <td>${summary} ${silence}</td>
    <td>${act}</td></tr>`;
}

function alertTable(list, actions, empty) {
  if (!list.length) return `<p class="note">${esc(empty)}</p>`;
  return `<table><thead><tr><th>kind</th><th>task</th><th>agents</th><th>expected</th><th>due</th><th>last event</th><th>summary</th><th></th></tr></thead>
    <tbody>${list.map((a) => alertRow(a, actions)).join("")}</tbody></table>`;
}

async function renderAlerts() {
  let a;
  try { a = await getJSON("/api/alerts"); } catch (e) {
    view.innerHTML = `<p class="error">Cannot load alerts: ${esc(e.message)}</p>`;
    return;
  }
  if (route.name !== "alerts") return;
  firingCount.textContent = a.firing.length ? String(a.firing.length) : "";
  const active = a.silences.filter((s) => s.active);
  const silences = active.length ? `<table id="silences"><thead><tr><th>id</th><th>task</th><th>kind</th><th>agent</th><th>until</th><th>by</th><th>reason</th><th></th></tr></thead><tbody>
    ${active.map((s) => `<tr data-silence="${esc(s.id)}"><td>${esc(s.id)}</td><td>${s.task ? taskLink(s.task) : "*"}</td><td>${esc(s.kind || "*")}</td><td>${esc(s.agent || "*")}</td>
      <td>${localTime(s.until)}</td><td>${esc(s.created_by)}</td><td>${esc(s.reason)}</td><td>${opButton("Expire", `data-expire="${esc(s.id)}"`)}</td></tr>`).join("")}
    </tbody></table>` : `<p class="note">No active silences.</p>`;
  const kinds = ["heartbeat_missed", "handoff_not_accepted", "not_started", "deadline_exceeded", "no_progress", "blocked_too_long"];
  const form = `<form class="silence" id="silence-form"><strong>New silence</strong>
    <input name="task" placeholder="task" size="14"><select name="kind"><option value="">any kind</option>${kinds.map((k) => `<option>${k}</option>`).join("")}</select>
    <input name="agent" placeholder="agent" size="10"><input name="for" value="1h" size="4" title="e.g. 30m, 2h">
    <input name="reason" placeholder="reason" size="18">${opButton("Silence", 'type="submit"')}<span id="silence-msg" class="note"></span></form>`;
  view.innerHTML = `${operatorBanner()}
    <h2>Firing <span class="note">(${a.firing.length})</span></h2>${alertTable(a.firing, true, "Nothing is firing.")}
    <h3>Silences</h3>${silences}${form}
    <h3>Recently resolved <span class="note">(last hour)</span></h3>${alertTable(a.resolved, false, "Nothing resolved in the last hour.")}
    <h3>Protocol reports <span class="note">(last 24 h: violations, stale context, malformed events, unknown tasks)</span></h3>${alertTable(a.reports, false, "No reports.")}`;
  for (const b of view.querySelectorAll("[data-silence-task]")) {
    b.onclick = () => silence({ task: b.dataset.silenceTask, kind: b.dataset.silenceKind, for: "1h", reason: "silenced from the console" }, b);
  }
  for (const b of view.querySelectorAll("[data-expire]")) {
    b.onclick = async () => {
      b.disabled = true;
      try { await postJSON("/api/silences/" + encodeURIComponent(b.dataset.expire) + "/expire"); renderAlerts(); }
      catch (e) { b.disabled = false; b.title = e.message; b.textContent = "failed: " + e.message; }
    };
  }
  const f = document.getElementById("silence-form");
  f.onsubmit = (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(f).entries());
    for (const k of ["task", "kind", "agent"]) if (!data[k]) delete data[k];
    silence(data, f.querySelector("button"));
  };
}

async function silence(data, button) {
  const msg = document.getElementById("silence-msg");
  if (button) button.disabled = true;
  try {
    const s = await postJSON("/api/silences", data);
    if (msg) { msg.className = "ok"; msg.textContent = "Silence " + s.id + " active."; }
    renderAlerts();
  } catch (e) {
    if (button) button.disabled = false;
    if (msg) { msg.className = "error"; msg.textContent = e.message; }
  }
}

// ---------- task ----------

async function renderTask() {
  const id = route.arg;
  let p;
  try { p = await getJSON("/api/tasks/" + encodeURIComponent(id)); } catch (e) {
    view.innerHTML = `<p class="error">Task ${esc(id)}: ${esc(e.message)}</p>`;
    return;
  }
  if (route.name !== "task" || route.arg !== id) return;
  const t = p.task;
  let facts = `<p class="note">No state for this task (never created?).</p>`;
  if (t) {
    const h = t.handoff ? `${esc(t.handoff.from)} → ${t.handoff.to_kind === "stage" ? "stage " : ""}${esc(t.handoff.to)}, offered ${since(t.handoff.offered_at, " ago")}${t.handoff.accept_by ? ", accept by " + localTime(t.handoff.accept_by) : ""}` : "—";
    facts = `<dl class="facts" id="task-facts">
      <dt>title</dt><dd>${esc(t.title) || "—"}</dd>
      <dt>workflow / stage</dt><dd><a href="#/pipeline/${encodeURIComponent(t.workflow)}">${esc(t.workflow)}</a> / ${esc(t.stage || "—")}</dd>
      <dt>status</dt><dd><span class="status">${esc(t.status)}</span>${t.stalled ? ' <span class="bad">stalled</span>' : ""}${t.outcome ? " · " + esc(t.outcome) : ""}</dd>
      <dt>owner · epoch</dt><dd>${esc(t.owner || "none")} · ${t.epoch}</dd>
      <dt>handoff</dt><dd>${h}</dd>
      <dt>created</dt><dd>${localTime(t.created_at)} (${since(t.created_at, " ago")})</dd>
      <dt>last event</dt><dd>${esc(t.last_event.kind)} by ${esc(t.last_event.agent)} · ${since(t.last_event.at, " ago")} (seq ${t.last_event.seq})</dd>
      <dt>decision record read</dt><dd>version ${t.context_version || "none"}</dd>
      <dt>violations</dt><dd>${t.violations}</dd>
      ${t.blocked_reason ? `<dt>blocked</dt><dd>${esc(t.blocked_reason)}</dd>` : ""}
      ${t.output_location ? `<dt>output</dt><dd>${esc(t.output_location)}</dd>` : ""}
      <dt>source</dt><dd class="note">${esc(p.source)}</dd></dl>`;
  }
  const tl = p.timeline.length ? `<table id="timeline"><thead><tr><th class="num">seq</th><th>stored</th><th>agent</th><th>event</th><th>detail</th><th class="num">sent at epoch</th><th>owner after</th><th class="num">epoch after</th><th>status after</th><th class="num">record version</th></tr></thead><tbody>
    ${p.timeline.map((e) => `<tr class="${e.refused ? "refused" : ""}" data-seq="${e.seq}" data-refused="${e.refused ? "true" : "false"}">
      <td class="num">${e.seq}</td><td>${localTime(e.stored_at)}</td><td>${esc(e.agent)}</td><td><b>${esc(e.kind)}</b></td>
      <td>${esc(e.detail)}${e.refused ? `<div class="why">refused: ${esc(e.refused)}</div>` : ""}</td>
      <td class="num">${e.event_epoch}</td><td>${esc(e.owner || "—")}</td><td class="num">${e.epoch}</td><td>${esc(e.status || "—")}</td><td class="num">${e.context_version || "—"}</td></tr>`).join("")}
    </tbody></table>${p.timeline_truncated ? '<p class="note">Older events left out.</p>' : ""}` : "";
  const tlError = p.timeline_error ? `<p class="error">Timeline: ${esc(p.timeline_error)}</p>` : "";
  let record = p.context_error ? `<p class="error">${esc(p.context_error)}</p>` : "";
  if (p.context) {
    const read = t ? t.context_version : 0;
    record = p.context.decisions.length ? `<p class="note">Version ${p.context.version}; this task's events carried version ${read || "none"}${read && read < p.context.version ? " — newer decisions are highlighted" : ""}.</p>
      <table id="decisions"><thead><tr><th class="num">version</th><th>author</th><th>summary</th><th>recorded</th><th>supersedes</th></tr></thead><tbody>
      ${p.context.decisions.map((d) => `<tr class="decision${d.version > read ? " unread" : ""}"><td class="num">${d.version}${d.version === read ? " ◀ read" : ""}</td><td>${esc(d.author)}</td>
        <td><b>${esc(d.summary)}</b>${d.body ? `<details><summary>body</summary><pre>${esc(d.body)}${d.body_truncated ? "\n…" : ""}</pre></details>` : ""}</td>
        <td>${localTime(d.stored_at)}</td><td>${d.supersedes || "—"}</td></tr>`).join("")}</tbody></table>`
      : `<p class="note">Workflow ${esc(p.context.workflow)} has no decision record.</p>`;
  }
  view.innerHTML = `<h2>Task ${esc(id)}</h2>${facts}
    <h3>Alerts</h3>${alertTable(p.alerts, false, "No alerts about this task.")}
    <h3>Timeline <span class="note">(owner and epoch after each event; refused events marked with why)</span></h3>${tlError}${tl}
    <h3>Decision record${t ? " of " + esc(t.workflow) : ""}</h3>${record}`;
  if (t) connect(t.workflow);
}

// ---------- health ----------

async function renderHealth() {
  let h;
  try { h = await getJSON("/api/health"); } catch (e) {
    view.innerHTML = `<p class="error">Cannot load health: ${esc(e.message)}</p>`;
    return;
  }
  if (route.name !== "health") return;
  const other = (o) => Object.entries(o || {}).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(", ") || "";
  const services = h.services.length ? `<table id="services"><thead><tr><th>service</th><th>instance</th><th>role</th><th class="num">term</th><th>alive</th><th>version</th><th>started</th><th>last report</th><th class="num">applied seq</th><th class="num">pending</th><th>http</th><th>other</th></tr></thead><tbody>
    ${h.services.map((s) => `<tr class="${s.alive ? "" : "dead"}"><td><b>${esc(s.service)}</b></td><td>${esc(s.instance)}</td><td>${esc(s.role || "—")}</td><td class="num">${s.term || "—"}</td>
      <td class="${s.alive ? "ok" : "bad"}">${s.alive ? "alive" : "silent"}</td><td>${esc(s.version)}</td><td>${localTime(s.started_at)}</td><td>${since(s.reported_at, " ago")}</td>
      <td class="num">${s.applied_seq}</td><td class="num">${s.pending}</td><td>${s.http_addr ? esc(s.http_addr) : "—"}</td><td class="note">${other(s.other_fields)}</td></tr>`).join("")}
    </tbody></table>` : `<p class="bad">No service reports liveness: nothing may be watching the tasks.</p>`;
  const consumers = h.consumers.length ? `<table id="consumers"><thead><tr><th>stream</th><th>consumer</th><th class="num">lag (pending)</th><th class="num">ack pending</th><th class="num">delivered seq</th><th class="num">ack floor</th></tr></thead><tbody>
    ${h.consumers.map((c) => `<tr><td>${esc(c.stream)}</td><td>${esc(c.consumer)}</td><td class="num">${c.pending}</td><td class="num">${c.ack_pending}</td><td class="num">${c.delivered_seq}</td><td class="num">${c.ack_floor}</td></tr>`).join("")}
    </tbody></table>` : `<p class="note">No durable consumers yet.</p>`;
  const streams = `<table id="streams"><thead><tr><th>stream</th><th class="num">messages</th><th class="num">bytes</th><th class="num">first seq</th><th class="num">last seq</th><th class="num">consumers</th></tr></thead><tbody>
    ${h.streams.map((s) => `<tr><td>${esc(s.stream)}</td><td class="num">${s.messages}</td><td class="num">${s.bytes}</td><td class="num">${s.first_seq}</td><td class="num">${s.last_seq}</td><td class="num">${s.consumers}</td></tr>`).join("")}
    </tbody></table>`;
  const last = h.last_alert
    ? `<p><b>${esc(h.last_alert.kind)}</b> (${esc(h.last_alert.state)}) ${h.last_alert.task ? taskLink(h.last_alert.task) : ""} · ${since(h.last_alert.observed_at, " ago")} — ${esc(h.last_alert.summary)}</p>`
    : `<p class="note">No alert yet.</p>`;
  const wfs = h.workflows.length ? `<table id="records"><thead><tr><th>workflow</th><th class="num">decision-record version</th><th class="num">decisions</th><th class="num">tasks</th><th class="num">active</th><th class="num">stalled</th></tr></thead><tbody>
    ${h.workflows.map((w) => `<tr><td><a href="#/pipeline/${encodeURIComponent(w.id)}">${esc(w.id)}</a></td><td class="num">${w.context_version || "—"}</td><td class="num">${w.decisions}</td><td class="num">${w.tasks}</td><td class="num">${w.active}</td><td class="num">${w.stalled}</td></tr>`).join("")}
    </tbody></table>` : `<p class="note">No workflows yet.</p>`;
  const problems = h.problems.length ? `<div class="banner">${h.problems.map(esc).join("<br>")}</div>` : "";
  view.innerHTML = `${problems}<h2>Health <span class="note">${h.tasks} tasks known · ${h.firing} firing</span></h2>
    <h3>Services</h3>${services}<h3>Consumers</h3>${consumers}<h3>Streams</h3>${streams}
    <h3>Last alert</h3>${last}<h3>Decision records</h3>${wfs}`;
}

// ---------- routing ----------

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const name = ["pipeline", "alerts", "task", "health"].includes(parts[0]) ? parts[0] : "pipeline";
  return { name, arg: decodeURIComponent(parts.slice(1).join("/")) };
}

async function render() {
  route = parseRoute();
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.view === route.name);
  }
  clearInterval(ticker);
  ticker = setInterval(() => { tick(); if (route.name === "health") renderHealth(); }, route.name === "health" ? 2000 : 1000);
  if (route.name === "pipeline") {
    if (route.arg && route.arg !== board.workflow) board.limit = 50;
    await renderPipeline();
  } else if (route.name === "alerts") {
    connect("");
    await renderAlerts();
  } else if (route.name === "task") {
    await renderTask();
  } else {
    connect("");
    await renderHealth();
  }
}

async function start() {
  try { me = await getJSON("/api/me"); } catch (e) { me = { operator: false, why: e.message }; }
  operatorBadge.textContent = me.operator ? "operator: " + me.identity : "read-only";
  operatorBadge.className = "badge" + (me.operator ? " op" : "");
  operatorBadge.title = me.operator ? "silences are made as " + me.identity : me.why;
  window.addEventListener("hashchange", render);
  refreshFiringCount();
  await render();
}

start();
