// app.js: the built-in dashboard. Swarm tiles from a `snapshot` subscription plus its deltas; an
// event stream with topic / where filters, priority highlighting and pause; a connection
// indicator. Reconnects and resumes from the last cursor by itself (dash-client.js).
//
// Page parameters: ?token=<jwt> (moved to sessionStorage and removed from the address bar),
// ?swarm=<id> (watch one swarm), ?topics=a.>,b.* and ?where=<json> (the event stream's filter).

import { DashClient } from "/web/dash-client.js";
import { AGENT_STATUSES, SwarmBoard, swarmOfTopic } from "/web/swarm-state.js";

const MAX_ROWS = 1000;
const MAX_PAUSED = 10_000;
const TOKEN_KEY = "dash-stream.token";

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// ---------------------------------------------------------------- parameters and token

const params = new URLSearchParams(location.search);
let token = params.get("token");
if (token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
} else {
  token = sessionStorage.getItem(TOKEN_KEY);
}

/** The token's subscribe patterns (read, not verified: the server verifies). */
function tokenPatterns(jwt) {
  try {
    const payload = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    const subscribe = payload?.dash?.subscribe;
    return Array.isArray(subscribe) ? subscribe.filter((p) => typeof p === "string") : [];
  } catch {
    return [];
  }
}

/** The topics of the state subscription: ?swarm=, else what the token may read of swarm.>. */
function stateTopics() {
  const swarm = params.get("swarm");
  if (swarm) return [`swarm.${swarm}.>`];
  if (token) {
    const patterns = tokenPatterns(token);
    if (patterns.some((p) => p === ">" || p === "swarm.>")) return ["swarm.>"];
    const swarmPatterns = patterns.filter((p) => p.startsWith("swarm."));
    if (swarmPatterns.length) return swarmPatterns;
  }
  return ["swarm.>"];
}

const splitTopics = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);
$("f-topics").value = params.get("topics") || stateTopics().join(",");
$("f-where").value = params.get("where") || "";

// ---------------------------------------------------------------- connection indicator

const client = new DashClient(location.origin, { token });
const board = new SwarmBoard();
let countdown = null;

function showConnection(change) {
  const conn = $("conn");
  const label = $("conn-text");
  conn.dataset.state = change.state;
  clearInterval(countdown);
  countdown = null;
  switch (change.state) {
    case "connecting":
      label.textContent = "connecting…";
      break;
    case "open":
      label.textContent = "live";
      $("login").hidden = true;
      break;
    case "reconnecting": {
      const until = Date.now() + (change.delayMs ?? 0);
      const tick = () => {
        const left = Math.max(0, until - Date.now());
        label.textContent = change.delayMs === undefined ? "reconnecting…" : `reconnecting in ${(left / 1000).toFixed(1)} s`;
      };
      tick();
      if (change.delayMs !== undefined) countdown = setInterval(tick, 200);
      break;
    }
    case "unauthorized":
      label.textContent = "needs a token";
      $("login").hidden = false;
      $("login-error").textContent = change.error && token ? change.error.message : "";
      $("token").focus();
      break;
    case "failed":
      label.textContent = `disconnected: ${change.error?.message ?? "closed"}`;
      break;
    default:
      label.textContent = change.state;
  }
}

client.on("state", showConnection);
client.on("error", (e) => console.warn("dash-stream:", e));

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  client.setToken(value);
});

// ---------------------------------------------------------------- swarm tiles

const dirty = new Set();
let renderQueued = false;

function queueRender(swarmId) {
  if (swarmId === null) return;
  dirty.add(swarmId);
  if (!renderQueued) {
    renderQueued = true;
    requestAnimationFrame(renderDirty);
  }
}

function renderDirty() {
  renderQueued = false;
  for (const id of dirty) renderSwarm(board.swarms.get(id));
  dirty.clear();
  renderSwarmCount();
}

function renderAll() {
  $("swarms").replaceChildren();
  for (const s of board.list()) renderSwarm(s);
  renderSwarmCount();
}

function renderSwarmCount() {
  const n = board.swarms.size;
  $("swarm-count").textContent = n ? `(${n})` : "";
  $("no-swarms").hidden = n > 0;
}

function swarmCard(id) {
  let card = document.querySelector(`.swarm[data-swarm="${CSS.escape(id)}"]`);
  if (card) return card;
  card = el("article", "swarm");
  card.dataset.swarm = id;
  const head = el("div", "swarm-head");
  head.append(el("h3", "swarm-id", id), el("span", "badge swarm-status"), el("span", "swarm-rate muted"));
  const spark = el("div", "spark");
  for (let i = 0; i < 60; i++) spark.append(el("span"));
  card.append(head, el("div", "counts"), el("div", "tiles"), spark, el("div", "tasks muted"), el("div", "last-error"));
  // keep cards sorted by swarm id
  const after = [...$("swarms").children].find((c) => c.dataset.swarm > id);
  $("swarms").insertBefore(card, after ?? null);
  return card;
}

function renderSwarm(s) {
  if (!s) return;
  const card = swarmCard(s.swarm_id);
  const status = card.querySelector(".swarm-status");
  status.textContent = s.status ?? "no status";
  status.dataset.status = s.status ?? "none";
  status.title = s.status_message ?? "";
  const perMin = board.rate(s);
  card.querySelector(".swarm-rate").textContent = `${perMin} events/min`;
  const counts = board.counts(s);
  const countsEl = card.querySelector(".counts");
  countsEl.replaceChildren(
    ...AGENT_STATUSES.filter((k) => counts[k] > 0).map((k) => {
      const c = el("span", `count status-${k}`, `${k} ${counts[k]}`);
      c.dataset.status = k;
      c.dataset.count = String(counts[k]);
      return c;
    }),
  );
  const tiles = card.querySelector(".tiles");
  const existing = new Map([...tiles.children].map((t) => [t.dataset.agent, t]));
  const agents = [...s.agents.values()].sort((a, b) => (a.agent_id < b.agent_id ? -1 : 1));
  let previous = null;
  for (const a of agents) {
    let tile = existing.get(a.agent_id);
    existing.delete(a.agent_id);
    if (!tile) {
      tile = el("div", "tile", a.agent_id);
      tile.dataset.agent = a.agent_id;
    }
    tile.className = `tile status-${a.status}`;
    tile.dataset.status = a.status;
    tile.title = `${a.agent_id}: ${a.status}\nlast: ${a.last_type} at ${a.last_event_time}${a.reason ? `\nreason: ${a.reason}` : ""}`;
    const want = previous ? previous.nextSibling : tiles.firstChild;
    if (want !== tile) tiles.insertBefore(tile, want);
    previous = tile;
  }
  for (const t of existing.values()) t.remove();
  const bars = card.querySelectorAll(".spark span");
  const max = Math.max(1, ...s.series);
  s.series.forEach((n, i) => {
    bars[i].style.height = `${Math.round((n / max) * 100)}%`;
  });
  card.querySelector(".tasks").textContent = `tasks: ${s.tasks.size} running · ${s.tasks_completed} completed · ${s.tasks_failed} failed`;
  const err = card.querySelector(".last-error");
  if (s.last_error) {
    err.textContent = `last error (${s.last_error.type}${s.last_error.agent_id ? `, ${s.last_error.agent_id}` : ""}): ${s.last_error.message}`;
    err.dataset.priority = s.last_error.priority ?? "normal";
  } else {
    err.textContent = "";
  }
}

setInterval(() => {
  for (const s of board.swarms.values()) queueRender(s.swarm_id);
}, 1000);

// the subscriptions start once the connection is open, when the token (and so what it may read)
// is known; after that the client resubscribes by itself on every reconnect
function startState() {
  client.subscribe(stateTopics(), {
    id: "state",
    snapshot: true,
    onSnapshot: (frame) => {
      board.load(frame.swarms);
      renderAll();
    },
    onEvent: (event) => queueRender(board.apply(event)),
    onError: (e) => {
      $("no-swarms").hidden = false;
      $("no-swarms").textContent = `swarm state unavailable: ${e.message}`;
    },
  });
}

// ---------------------------------------------------------------- event stream

let stream = null;
let streamNumber = 0;
let paused = false;
let held = [];
let droppedWhilePaused = 0;
let shown = 0;

function timeOf(event) {
  const d = new Date(event.time);
  if (Number.isNaN(d.getTime())) return event.time;
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function rowFor(event) {
  const tr = el("tr", `event prio-${event.priority}`);
  tr.dataset.offset = event.offset;
  tr.dataset.id = event.id;
  tr.dataset.type = event.type;
  tr.dataset.priority = event.priority;
  const data = event.data === undefined || event.data === null ? "" : JSON.stringify(event.data);
  tr.append(
    el("td", "time", timeOf(event)),
    el("td", "priority", event.priority),
    el("td", "topic", event.topic),
    el("td", "type", event.type),
    el("td", "data", data.length > 200 ? `${data.slice(0, 199)}…` : data),
  );
  return tr;
}

function noteRow(text, className = "note") {
  const tr = el("tr", className);
  const td = el("td", null, text);
  td.colSpan = 5;
  tr.append(td);
  return tr;
}

function appendRows(nodes) {
  if (!nodes.length) return;
  const rows = $("rows");
  const wrap = $("table-wrap");
  const atBottom = wrap.scrollTop + wrap.clientHeight >= wrap.scrollHeight - 30;
  const fragment = document.createDocumentFragment();
  for (const n of nodes) fragment.append(n);
  rows.append(fragment);
  while (rows.children.length > MAX_ROWS) rows.firstElementChild.remove();
  if (atBottom) wrap.scrollTop = wrap.scrollHeight;
}

function onEvents(events) {
  if (!events.length) return;
  if (paused) {
    held.push(...events);
    if (held.length > MAX_PAUSED) {
      droppedWhilePaused += held.length - MAX_PAUSED;
      held = held.slice(held.length - MAX_PAUSED);
    }
    $("paused-note").textContent = `${held.length + droppedWhilePaused} new while paused`;
    return;
  }
  shown += events.length;
  $("event-count").textContent = `(${shown})`;
  appendRows(events.map(rowFor));
}

function startStream(topics, where) {
  streamNumber += 1;
  stream = client.subscribe(topics, {
    id: `stream-${streamNumber}`,
    where,
    from: "latest",
    onBatch: onEvents,
    onGap: (gap) => appendRows([noteRow(`events may be missing (${gap.reason}): the server could not resume the stream`, "note gap")]),
    onError: (e) => {
      $("filter-error").textContent = e.message;
    },
  });
}

$("filters").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("filter-error").textContent = "";
  const topics = $("f-topics").value.split(",").map((t) => t.trim()).filter(Boolean);
  let where;
  const whereText = $("f-where").value.trim();
  if (whereText) {
    try {
      where = JSON.parse(whereText);
    } catch (e) {
      $("filter-error").textContent = `where is not JSON: ${e.message}`;
      return;
    }
  }
  if (!topics.length) {
    $("filter-error").textContent = "give at least one topic pattern";
    return;
  }
  const old = stream;
  startStream(topics, where);
  appendRows([noteRow(`filter: ${topics.join(", ")}${where ? ` where ${JSON.stringify(where)}` : ""}`)]);
  await old?.unsubscribe().catch(() => {});
});

$("pause").addEventListener("click", () => {
  paused = !paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("pause").setAttribute("aria-pressed", String(paused));
  if (!paused) {
    const events = held;
    held = [];
    if (droppedWhilePaused) appendRows([noteRow(`${droppedWhilePaused} events not shown while paused`, "note gap")]);
    droppedWhilePaused = 0;
    $("paused-note").textContent = "";
    onEvents(events);
  }
});

let started = false;
client.on("state", ({ state }) => {
  if (state !== "open" || started) return;
  started = true;
  if (!params.get("topics")) $("f-topics").value = stateTopics().join(",");
  let where;
  try {
    where = $("f-where").value ? JSON.parse($("f-where").value) : undefined;
  } catch {
    $("filter-error").textContent = "?where= is not JSON; ignored";
  }
  startState();
  startStream(splitTopics($("f-topics").value), where);
});
client.connect().catch(() => {});

// for people poking at the page from the console (and for the browser tests)
window.dash = { client, board, swarmOfTopic };
