// swarm-state.js: the dashboard's mirror of the server's live swarm state (dash_stream/state.py).
//
// `load()` takes the swarms of a `snapshot` frame; `apply()` folds each event delivered after the
// snapshot's cursor with the same rules as the server, so the tiles stay exact between snapshots.
// Rates: the snapshot's per-second series ends "now"; deltas count in the second they arrive.

const LIFECYCLE = {
  "agent.spawned": "spawned",
  "agent.started": "running",
  "agent.completed": "completed",
  "agent.failed": "failed",
  "agent.killed": "killed",
};
export const AGENT_STATUSES = ["spawned", "running", "completed", "failed", "killed", "unknown"];
const ERROR_TYPES = new Set(["error", "agent.failed", "task.failed"]);
const WINDOW_S = 60;

/** The swarm of a topic: `swarm.<swarm>.…` with at least three segments. */
export function swarmOfTopic(topic) {
  if (typeof topic !== "string" || !topic.startsWith("swarm.")) return null;
  const parts = topic.split(".");
  return parts.length >= 3 ? parts[1] : null;
}

function ident(value) {
  if (typeof value === "number" && Number.isInteger(value)) value = String(value);
  return typeof value === "string" && value.length > 0 && value.length <= 128 ? value : null;
}

function text(value, max = 512) {
  return typeof value === "string" && value ? value.slice(0, max) : null;
}

function emptySwarm(id) {
  return {
    swarm_id: id,
    status: null,
    status_message: null,
    status_time: null,
    expected_agents: null,
    agents: new Map(),
    tasks: new Map(),
    tasks_completed: 0,
    tasks_failed: 0,
    last_error: null,
    events: 0,
    last_event_time: "",
    last_offset: "",
    series: new Array(WINDOW_S).fill(0),
    seriesEnd: 0,
  };
}

export class SwarmBoard {
  constructor({ maxSwarms = 1000, maxAgents = 1000, maxTasks = 1000 } = {}) {
    this.limits = { maxSwarms, maxAgents, maxTasks };
    this.swarms = new Map();
  }

  /** Replace everything with the swarms of a snapshot. */
  load(views, nowMs = Date.now()) {
    this.swarms.clear();
    const end = Math.floor(nowMs / 1000);
    for (const v of views) {
      const s = emptySwarm(v.swarm_id);
      Object.assign(s, {
        status: v.status ?? null,
        status_message: v.status_message ?? null,
        status_time: v.status_time ?? null,
        expected_agents: v.expected_agents ?? null,
        tasks_completed: v.tasks_completed,
        tasks_failed: v.tasks_failed,
        last_error: v.last_error ?? null,
        events: v.events,
        last_event_time: v.last_event_time,
        last_offset: v.last_offset,
        series: [...(v.rates?.series ?? new Array(WINDOW_S).fill(0))],
        seriesEnd: end,
      });
      for (const a of v.agents ?? []) s.agents.set(a.agent_id, { ...a });
      for (const t of v.tasks_running ?? []) s.tasks.set(t.task_id, { ...t });
      this.swarms.set(v.swarm_id, s);
    }
  }

  _swarm(id) {
    let s = this.swarms.get(id);
    if (!s) {
      s = emptySwarm(id);
      this.swarms.set(id, s);
      if (this.swarms.size > this.limits.maxSwarms) this.swarms.delete(this.swarms.keys().next().value);
    } else {
      this.swarms.delete(id); // keep Map order = least recently updated first (LRU)
      this.swarms.set(id, s);
    }
    return s;
  }

  /** Fold one event; returns the id of the swarm it changed, or null. */
  apply(event, nowMs = Date.now()) {
    const swarmId = swarmOfTopic(event.topic);
    if (swarmId === null) return null;
    const s = this._swarm(swarmId);
    const kind = event.type;
    const data = event.data && typeof event.data === "object" && !Array.isArray(event.data) ? event.data : {};
    s.events += 1;
    s.last_event_time = event.time;
    s.last_offset = event.offset;
    this._count(s, nowMs);
    let agentId = ident(data.agent_id) ?? ident(event.labels?.agent);
    if (agentId === null) {
      const parts = event.topic.split(".");
      if (parts.length >= 4 && parts[2] === "agent") agentId = ident(parts[3]);
    }
    if (agentId !== null) {
      let agent = s.agents.get(agentId);
      if (!agent && kind.startsWith("agent.")) {
        agent = { agent_id: agentId, status: "unknown", session_key: null, reason: null };
        s.agents.set(agentId, agent);
        if (s.agents.size > this.limits.maxAgents) s.agents.delete(s.agents.keys().next().value);
      }
      if (agent) {
        agent.last_type = kind;
        agent.last_event_time = event.time;
        agent.last_offset = event.offset;
        const status = LIFECYCLE[kind];
        if (status) {
          agent.status = status;
          agent.session_key = ident(data.session_key) ?? agent.session_key;
          agent.reason = text(data.error || data.reason);
        }
      }
    }
    if (kind === "swarm.status") {
      if (typeof data.status === "string" && data.status) s.status = data.status.slice(0, 32);
      s.status_message = text(data.message);
      s.status_time = event.time;
      if (Number.isInteger(data.agents)) s.expected_agents = data.agents;
    } else if (kind.startsWith("task.")) {
      const taskId = ident(data.task_id);
      if (kind === "task.completed" || kind === "task.failed") {
        if (kind === "task.completed") s.tasks_completed += 1;
        else s.tasks_failed += 1;
        if (taskId !== null) s.tasks.delete(taskId);
      } else if (taskId !== null) {
        const task = s.tasks.get(taskId) ?? { task_id: taskId, agent_id: agentId, started_time: event.time };
        s.tasks.delete(taskId);
        s.tasks.set(taskId, { ...task, agent_id: agentId ?? task.agent_id, last_event_time: event.time, last_offset: event.offset });
        if (s.tasks.size > this.limits.maxTasks) s.tasks.delete(s.tasks.keys().next().value);
      }
    }
    if (ERROR_TYPES.has(kind)) {
      const message = text(data.message || data.error || data.reason) ?? (typeof event.data === "string" ? text(event.data) : null);
      s.last_error = {
        type: kind,
        message: message || kind.replace(".", " "),
        time: event.time,
        offset: event.offset,
        priority: event.priority,
        agent_id: agentId,
        task_id: ident(data.task_id),
      };
    }
    return swarmId;
  }

  _count(s, nowMs) {
    this._shift(s, nowMs);
    s.series[WINDOW_S - 1] += 1;
  }

  _shift(s, nowMs) {
    const now = Math.floor(nowMs / 1000);
    const by = now - s.seriesEnd;
    if (by <= 0) return;
    if (by >= WINDOW_S) s.series.fill(0);
    else s.series.splice(0, WINDOW_S, ...s.series.slice(by), ...new Array(by).fill(0));
    s.seriesEnd = now;
  }

  /** Events in the last minute of a swarm, as of `nowMs`. */
  rate(s, nowMs = Date.now()) {
    this._shift(s, nowMs);
    return s.series.reduce((a, b) => a + b, 0);
  }

  /** Agent counts by status. */
  counts(s) {
    const counts = Object.fromEntries(AGENT_STATUSES.map((k) => [k, 0]));
    for (const a of s.agents.values()) counts[a.status] = (counts[a.status] ?? 0) + 1;
    return counts;
  }

  /** Swarms sorted by id. */
  list() {
    return [...this.swarms.values()].sort((a, b) => (a.swarm_id < b.swarm_id ? -1 : a.swarm_id > b.swarm_id ? 1 : 0));
  }
}
