// Test support for the JavaScript client: real `dash-stream serve` processes, a TCP proxy that can
// cut the network, HS256 tokens, and waiting helpers. Node >= 22 (global WebSocket, fetch).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const DASH_STREAM = process.env.DASH_STREAM_BIN || path.join(REPO, ".venv", "bin", "dash-stream");
export const SCALE = Number(process.env.DASH_TEST_TIMEOUT_SCALE || "1") || 1;
export const SECRET = "js-client-tests-secret-0123456789abcdef";

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `predicate` until it returns something truthy (scaled timeout). */
export async function eventually(predicate, what = "a condition", withinMs = 10_000) {
  const deadline = Date.now() + withinMs * SCALE;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs * SCALE} ms waiting for ${what}`);
    await sleep(10);
  }
}

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("DASH_") || /_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  env.PYTHONUNBUFFERED = "1";
  return env;
}

/** Start `dash-stream serve` and wait for /healthz. `port` may be given to restart on the same one. */
export async function startServer(args = [], port = null) {
  port = port ?? (await freePort());
  const proc = spawn(DASH_STREAM, ["serve", "--host", "127.0.0.1", "--port", String(port), ...args], {
    cwd: REPO,
    env: cleanEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const server = {
    port,
    url,
    proc,
    log: () => log,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000 * SCALE);
      await exited;
      clearTimeout(timer);
    },
  };
  try {
    await eventually(async () => {
      if (proc.exitCode !== null) throw new Error(`dash-stream serve exited with ${proc.exitCode}:\n${log}`);
      try {
        return (await fetch(`${url}/healthz`)).ok;
      } catch {
        return false;
      }
    }, `dash-stream serve ${args.join(" ")} to become healthy`, 30_000);
  } catch (e) {
    await server.stop("SIGKILL");
    throw e;
  }
  return server;
}

/** POST events over HTTP; returns the offsets. */
export async function publishHttp(server, events, token = null) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const body = Array.isArray(events) ? { events } : events;
  const response = await fetch(`${server.url}/v1/events`, { method: "POST", headers, body: JSON.stringify(body) });
  const doc = await response.json();
  if (response.status !== 202) throw new Error(`publish answered ${response.status}: ${JSON.stringify(doc)}`);
  return doc.offsets;
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 JWT for `SECRET`. */
export function mintToken({ sub = "js-test", ttlS = 600, subscribe = [">"], publish = [">"] } = {}) {
  const header = b64url({ alg: "HS256", typ: "JWT" });
  const payload = b64url({ sub, exp: Math.floor(Date.now() / 1000) + ttlS, dash: { subscribe, publish } });
  const signature = createHmac("sha256", SECRET).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

/** A TCP proxy in front of `targetPort` whose connections the test can cut (the client sees 1006). */
export async function startProxy(targetPort) {
  const sockets = new Set();
  let accepting = true;
  const server = net.createServer((client) => {
    if (!accepting) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    cut() {
      accepting = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      accepting = true;
    },
    async close() {
      this.cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Collect a client's state changes. */
export function recordStates(client) {
  const states = [];
  client.on("state", (change) => states.push(change));
  return states;
}

export function uniqueTopic() {
  return `js${Math.random().toString(36).slice(2, 10)}`;
}
