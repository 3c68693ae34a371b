// The JavaScript client (dash_stream/web/dash-client.js) against real dash-stream servers.
// Run: node --test tests/web/js/   (Node >= 22; `make test` runs it through tests/web/test_js_client.py)

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  DashClient,
  DashError,
  advance,
  covers,
  later,
  parseCloseReason,
  parseCursor,
  shouldReconnect,
} from "../../../dash_stream/web/dash-client.js";
import { SwarmBoard } from "../../../dash_stream/web/swarm-state.js";
import {
  SECRET,
  eventually,
  mintToken,
  publishHttp,
  recordStates,
  sleep,
  startProxy,
  startServer,
  uniqueTopic,
} from "./support.mjs";

const clients = [];
function client(url, options) {
  const c = new DashClient(url, options);
  clients.push(c);
  return c;
}
after(() => {
  for (const c of clients) c.close();
});

/** Take `n` events from a subscription's async iterator. */
async function take(sub, n, withinMs = 10_000) {
  const out = [];
  const it = sub[Symbol.asyncIterator]();
  const deadline = sleep(withinMs).then(() => {
    throw new Error(`timed out with ${out.length}/${n} events`);
  });
  while (out.length < n) {
    const { value, done } = await Promise.race([it.next(), deadline]);
    if (done) break;
    out.push(value);
  }
  return out;
}

const seqs = (events) => events.map((e) => e.data.seq);
const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);

// ---------------------------------------------------------------- pure helpers

describe("cursor helpers and close policy", () => {
  test("cursors compare per partition with BigInt positions (Redis positions exceed 2^53)", () => {
    const big = "1819000000000123456";
    assert.equal(parseCursor(`ab12.3-${big}`).positions.get(3), BigInt(big));
    assert.equal(covers(`ab12.0-5.1-${big}`, `ab12.1-${big}`), true);
    assert.equal(covers(`ab12.0-5.1-${big}`, "ab12.1-1819000000000123457"), false);
    assert.equal(covers("ab12.0-5", "cd34.0-1"), false, "another epoch is never covered");
    assert.equal(covers("ab12.0-5", "ab12.2-1"), false, "an unknown partition is not covered");
    assert.equal(later("ab12.0-5.1-7", "ab12.1-9.2-1"), "ab12.0-5.1-9.2-1");
    assert.equal(advance(null, "ab12.0-1"), "ab12.0-1");
    assert.equal(later("ab12.0-5", "cd34.0-1"), "cd34.0-1", "a new epoch replaces the old cursor");
    assert.equal(parseCursor("not a cursor"), null);
  });

  test("4000-4499, 1001 and 1006 reconnect; 4500+ and fix-the-client codes stop", () => {
    for (const code of [1001, 1006, 1011, 4000, 4002, 4008, 4029, 4499]) assert.equal(shouldReconnect(code), true, code);
    for (const code of [1002, 1007, 1009, 4500, 4501, 4503, 4504]) assert.equal(shouldReconnect(code), false, code);
    assert.deepEqual(parseCloseReason('{"code":"slow_consumer","retry_after_ms":1200}'), {
      code: "slow_consumer",
      retryAfterMs: 1200,
      message: null,
    });
    assert.equal(parseCloseReason("plain text").message, "plain text");
  });
});

// ---------------------------------------------------------------- one shared dev server

describe("against a dev server", () => {
  let server;
  before(async () => {
    server = await startServer(["--dev", "--publish-rate", "0", "--conn-publish-rate", "0"]);
  });
  after(async () => {
    await server?.stop();
  });

  test("publish resolves with the ack and an async iterator gets the events in order", async () => {
    const topic = uniqueTopic();
    const c = client(server.url);
    await c.connect();
    assert.equal(c.state, "open");
    const sub = c.subscribe([`${topic}.>`]);
    const info = await sub.ready;
    assert.equal(info.recovered, true);
    const acks = [];
    for (const seq of range(0, 20)) acks.push(await c.publish({ topic: `${topic}.a`, type: "test.seq", data: { seq } }));
    assert.ok(acks.every((a) => typeof a.offset === "string" && a.duplicate === false));
    const events = await take(sub, 20);
    assert.deepEqual(seqs(events), range(0, 20));
    assert.deepEqual(
      events.map((e) => e.offset),
      acks.map((a) => a.offset),
    );
    assert.equal(sub.cursor, acks.at(-1).offset);
  });

  test("a publish retried with the same id is acknowledged as a duplicate", async () => {
    const topic = uniqueTopic();
    const c = client(server.url);
    await c.connect();
    const first = await c.publish({ topic: `${topic}.a`, type: "test.seq", id: "fixed-1", data: { seq: 1 } });
    const again = await c.publish({ topic: `${topic}.a`, type: "test.seq", id: "fixed-1", data: { seq: 1 } });
    assert.equal(again.duplicate, true);
    assert.equal(again.offset, first.offset);
  });

  test("callbacks with a where filter, and a subscription that replays from a cursor", async () => {
    const topic = uniqueTopic();
    const offsets = await publishHttp(
      server,
      range(0, 10).map((seq) => ({ topic: `${topic}.a`, type: "test.seq", priority: seq % 2 ? "high" : "low", data: { seq } })),
    );
    const c = client(server.url);
    await c.connect();
    const high = [];
    const sub = c.subscribe([`${topic}.>`], { from: "earliest", where: { priority: { gte: "high" } }, onEvent: (e) => high.push(e) });
    await sub.ready;
    await eventually(() => high.length === 5, "5 high-priority events");
    assert.deepEqual(seqs(high), [1, 3, 5, 7, 9]);
    const resumed = c.subscribe([`${topic}.>`], { cursor: offsets[6] });
    assert.equal((await resumed.ready).replayed, 3);
    assert.deepEqual(seqs(await take(resumed, 3)), [7, 8, 9]);
    assert.throws(() => c.subscribe([`${topic}.>`], { snapshot: true, from: "earliest" }), (e) => e instanceof DashError && e.code === "bad_request");
  });

  test("events a subscription's cursor already covers are dropped (duplicate suppression)", async () => {
    const topic = uniqueTopic();
    const c = client(server.url);
    await c.connect();
    const seen = [];
    const sub = c.subscribe([`${topic}.>`], { onEvent: (e) => seen.push(e) });
    await sub.ready;
    await publishHttp(server, range(0, 3).map((seq) => ({ topic: `${topic}.a`, type: "test.seq", data: { seq } })));
    await eventually(() => seen.length === 3, "3 events");
    // a frame that repeats what was delivered (as a buggy relay or a replay overlap would)
    c._onMessage(JSON.stringify({ op: "events", sub: sub.sub, events: seen.slice(1), cursor: seen[2].offset }));
    assert.equal(seen.length, 3);
    await publishHttp(server, [{ topic: `${topic}.a`, type: "test.seq", data: { seq: 3 } }]);
    await eventually(() => seen.length === 4, "the next event");
    assert.deepEqual(seqs(seen), [0, 1, 2, 3]);
  });

  test("a snapshot subscription gets the swarm state at a cursor, then exactly the events after it", async () => {
    const swarm = uniqueTopic();
    const agentEvent = (agent, type, extra = {}) => ({ topic: `swarm.${swarm}.agent.${agent}`, type, data: { agent_id: agent, swarm_id: swarm, ...extra } });
    await publishHttp(server, [
      agentEvent("a1", "agent.spawned"),
      agentEvent("a1", "agent.started"),
      agentEvent("a2", "agent.spawned"),
      { topic: `swarm.${swarm}.task.t1`, type: "task.started", data: { task_id: "t1", agent_id: "a1" } },
    ]);
    const c = client(server.url);
    await c.connect();
    const board = new SwarmBoard();
    const deltas = [];
    const sub = c.subscribe([`swarm.${swarm}.>`], {
      snapshot: true,
      onSnapshot: (frame) => board.load(frame.swarms),
      onEvent: (e) => {
        deltas.push(e);
        board.apply(e);
      },
    });
    const info = await sub.ready;
    assert.equal(info.snapshot.cursor, info.cursor);
    const [view] = info.snapshot.swarms;
    assert.equal(view.swarm_id, swarm);
    assert.equal(view.agent_counts.running, 1);
    assert.equal(view.agent_counts.spawned, 1);
    assert.deepEqual(view.tasks_running.map((t) => t.task_id), ["t1"]);
    await publishHttp(server, [
      agentEvent("a2", "agent.started"),
      agentEvent("a1", "agent.failed", { error: "oom" }),
      { topic: `swarm.${swarm}.task.t1`, type: "task.completed", data: { task_id: "t1" } },
    ]);
    await eventually(() => deltas.length === 3, "3 deltas");
    const served = await (await fetch(`${server.url}/v1/swarms/${swarm}`)).json();
    const mirrored = board.swarms.get(swarm);
    assert.equal(mirrored.events, served.events, "every event counted once");
    assert.deepEqual(board.counts(mirrored), served.agent_counts);
    assert.deepEqual([...mirrored.agents.values()].map((a) => [a.agent_id, a.status]), served.agents.map((a) => [a.agent_id, a.status]));
    assert.equal(mirrored.tasks.size, 0);
    assert.equal(mirrored.last_error.message, "oom");
  });

  test("a network drop reconnects and resumes from the cursor: no gap, no duplicate", async () => {
    const topic = uniqueTopic();
    const proxy = await startProxy(server.port);
    try {
      const c = client(proxy.url, { backoff: { initialMs: 50, maxMs: 400 } });
      const states = recordStates(c);
      await c.connect();
      const seen = [];
      const sub = c.subscribe([`${topic}.>`], { onEvent: (e) => seen.push(e) });
      await sub.ready;
      await publishHttp(server, range(0, 10).map((seq) => ({ topic: `${topic}.a`, type: "test.seq", data: { seq } })));
      await eventually(() => seen.length === 10, "10 events before the drop");
      proxy.cut();
      await eventually(() => states.some((s) => s.state === "reconnecting" && s.closeCode === 1006), "a 1006 reconnect");
      await publishHttp(server, range(10, 30).map((seq) => ({ topic: `${topic}.a`, type: "test.seq", data: { seq } })));
      proxy.restore();
      await eventually(() => seen.length >= 30 && c.state === "open", "the replayed events");
      await publishHttp(server, range(30, 35).map((seq) => ({ topic: `${topic}.a`, type: "test.seq", data: { seq } })));
      await eventually(() => seen.length >= 35, "live events after the resume");
      await sleep(100);
      assert.deepEqual(seqs(seen), range(0, 35));
      assert.equal(sub.recovered, true);
      assert.ok(c.reconnects >= 1);
    } finally {
      await proxy.close();
    }
  });

  test("an iterator that falls behind its bound is paused on the server and resumed without loss", async () => {
    const topic = uniqueTopic();
    const c = client(server.url);
    await c.connect();
    const sub = c.subscribe([`${topic}.>`], { maxBufferedEvents: 10 });
    await sub.ready;
    for (let i = 0; i < 100; i += 5) {
      await publishHttp(server, range(i, i + 5).map((seq) => ({ topic: `${topic}.a`, type: "test.seq", data: { seq } })));
    }
    await eventually(() => sub._paused, "the flow to pause");
    assert.ok(sub._queue.length <= 10, `queue bounded, holds ${sub._queue.length}`);
    assert.deepEqual(seqs(await take(sub, 100)), range(0, 100));
    await publishHttp(server, [{ topic: `${topic}.a`, type: "test.seq", data: { seq: 100 } }]);
    assert.deepEqual(seqs(await take(sub, 1)), [100]);
  });

  test("a subscription outside what the server allows fails with the server's error", async () => {
    const c = client(server.url);
    await c.connect();
    const sub = c.subscribe(["bad..pattern"]);
    await assert.rejects(sub.ready, (e) => e instanceof DashError && e.code === "bad_request");
    await assert.rejects(async () => {
      for await (const _ of sub) {
        // never reached
      }
    }, (e) => e.code === "bad_request");
  });
});

// ---------------------------------------------------------------- close codes and auth

test("a 4029 close is retried after the close reason's retry_after_ms", async () => {
  const server = await startServer(["--dev", "--connect-rate", "1"]);
  try {
    // the per-IP burst is 2 connection attempts: spend it, so the client's first attempt gets 4029
    const spent = [new WebSocket(`ws://127.0.0.1:${server.port}/v1/ws`), new WebSocket(`ws://127.0.0.1:${server.port}/v1/ws`)];
    await Promise.all(spent.map((ws) => new Promise((resolve) => ws.addEventListener("message", resolve, { once: true }))));
    const c = client(server.url);
    const states = recordStates(c);
    await c.connect();
    const limited = states.find((s) => s.closeCode === 4029);
    assert.ok(limited, `no 4029 in ${JSON.stringify(states)}`);
    const suggested = parseCloseReason(limited.reason).retryAfterMs;
    assert.ok(suggested > 0);
    assert.equal(limited.delayMs, suggested);
    for (const ws of spent) ws.close();
  } finally {
    await server.stop();
  }
});

test("with auth on: a 4501 close without a token provider stops until setToken", async () => {
  const server = await startServer(["--jwt-secret", SECRET, "--auth-timeout", "0.5"]);
  try {
    const c = client(server.url);
    const states = recordStates(c);
    c.connect().catch(() => {});
    await eventually(() => c.state === "unauthorized", "the unauthorized state");
    await eventually(() => c.lastClose?.code === 4501, "the auth deadline's 4501");
    await sleep(600);
    assert.equal(c.state, "unauthorized");
    assert.equal(states.filter((s) => s.state === "connecting" || s.state === "reconnecting").length, 1, "no reconnect after 4501");
    c.setToken(mintToken({ sub: "later" }));
    await eventually(() => c.state === "open", "open after setToken");
    assert.equal(c.principal.sub, "later");
    const sub = c.subscribe(["swarm.>"]);
    await sub.ready;
  } finally {
    await server.stop();
  }
});

test("a token provider refreshes before expiry; a forbidden subscribe fails; 4500+ closes stop", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  try {
    let minted = 0;
    const c = client(server.url, {
      tokenProvider: () => {
        minted += 1;
        return mintToken({ sub: "agent-7", ttlS: 2, subscribe: ["swarm.s1.>"], publish: ["swarm.s1.>"] });
      },
    });
    const authed = [];
    c.on("authed", (p) => authed.push(p));
    await c.connect();
    const session = c.session;
    await sleep(3000);
    assert.equal(c.state, "open");
    assert.equal(c.session, session, "the refresh kept the connection");
    assert.ok(authed.length >= 2 && minted >= 2, `authed ${authed.length}, minted ${minted}`);
    const forbidden = c.subscribe(["swarm.s2.>"]);
    await assert.rejects(forbidden.ready, (e) => e.code === "forbidden");
    await assert.rejects(c.publish({ topic: "swarm.s2.x", type: "t" }), (e) => e.code === "forbidden");
    const ok = await c.publish({ topic: "swarm.s1.x", type: "t" });
    assert.match(ok.offset, /\./);
  } finally {
    await server.stop();
  }
});

test("a server restart (1001, memory bus: new epoch) reports the gap and re-snapshots", async () => {
  let server = await startServer(["--dev"]);
  const port = server.port;
  try {
    await publishHttp(server, [{ topic: "swarm.r1.agent.a1", type: "agent.started", data: { agent_id: "a1" } }]);
    const c = client(server.url);
    const states = recordStates(c);
    const snapshots = [];
    const gaps = [];
    await c.connect();
    const sub = c.subscribe(["swarm.>"], { snapshot: true, onSnapshot: (f) => snapshots.push(f), onGap: (g) => gaps.push(g), onEvent: () => {} });
    await sub.ready;
    assert.equal(snapshots[0].swarms[0].agent_counts.running, 1);
    await server.stop("SIGTERM");
    const away = await eventually(() => states.find((s) => s.closeCode === 1001), "a 1001 close");
    assert.equal(away.delayMs, parseCloseReason(away.reason).retryAfterMs, "the server's delay is honoured");
    server = await startServer(["--dev"], port);
    await publishHttp(server, [{ topic: "swarm.r2.agent.b1", type: "agent.spawned", data: { agent_id: "b1" } }]);
    await eventually(() => snapshots.length === 2, "a fresh snapshot after the restart", 15_000);
    assert.deepEqual(gaps.map((g) => g.reason), ["epoch_changed"]);
    assert.deepEqual(snapshots[1].swarms.map((s) => s.swarm_id), ["r2"]);
  } finally {
    await server.stop();
  }
});
