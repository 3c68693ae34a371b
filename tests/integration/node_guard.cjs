// Egress guard for OpenClaw gateways started by the integration tests.
//
// Preloaded with NODE_OPTIONS=--require=<abs path>. Worker threads and child processes inherit
// NODE_OPTIONS, so they load it too. It fails every DNS lookup or TCP connect whose host is not
// loopback, asynchronously (on the next tick), with an ENOTFOUND-style error: the same thing an
// offline machine would produce, which the gateway already tolerates. Without it the gateway
// resolves clawhub.ai (plugin catalog prewarm) through the system resolver; no config key turns
// that off. Each blocked host is reported once on stderr, which the tests capture.
"use strict";

const dns = require("node:dns");
const net = require("node:net");

const reported = new Set();

function isLoopback(host) {
  if (host === undefined || host === null || host === "") return true; // Node defaults to localhost
  let h = String(host).toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  if (h.startsWith("::ffff:")) h = h.slice("::ffff:".length);
  return net.isIPv4(h) && h.startsWith("127.");
}

function blockedError(host, syscall) {
  if (!reported.has(host)) {
    reported.add(host);
    process.stderr.write(`[dash-egress-guard] blocked ${syscall} to non-loopback host ${host} (pid ${process.pid})\n`);
  }
  const err = new Error(`${syscall} ENOTFOUND ${host} (blocked by the dash-stream test egress guard)`);
  err.code = "ENOTFOUND";
  err.errno = -3008;
  err.syscall = syscall;
  err.hostname = host;
  return err;
}

function lastFunction(args) {
  const last = args[args.length - 1];
  return typeof last === "function" ? last : null;
}

// Callback-style functions: dns.lookup(host, [opts], cb), dns.resolve*(host, [type], cb).
function guardCallback(target, name, syscall) {
  const original = target[name];
  if (typeof original !== "function") return;
  target[name] = function guarded(host, ...rest) {
    const callback = lastFunction(rest);
    if (isLoopback(host) || callback === null) return original.call(this, host, ...rest);
    const err = blockedError(host, syscall);
    process.nextTick(() => callback(err));
    return undefined;
  };
}

// Promise-style functions: dns.promises.lookup(host, [opts]), dns.promises.resolve*(host, [type]).
function guardPromise(target, name, syscall) {
  const original = target[name];
  if (typeof original !== "function") return;
  target[name] = function guarded(host, ...rest) {
    if (isLoopback(host)) return original.call(this, host, ...rest);
    return Promise.reject(blockedError(host, syscall));
  };
}

function resolverNames(target) {
  return Object.getOwnPropertyNames(target).filter((n) => n.startsWith("resolve") || n === "reverse");
}

guardCallback(dns, "lookup", "getaddrinfo");
guardCallback(dns, "lookupService", "getnameinfo");
for (const name of resolverNames(dns)) guardCallback(dns, name, "query");
for (const name of resolverNames(dns.Resolver.prototype)) guardCallback(dns.Resolver.prototype, name, "query");
guardPromise(dns.promises, "lookup", "getaddrinfo");
for (const name of resolverNames(dns.promises)) guardPromise(dns.promises, name, "query");
for (const name of resolverNames(dns.promises.Resolver.prototype)) {
  guardPromise(dns.promises.Resolver.prototype, name, "query");
}

// net.Socket#connect covers net.connect, http(s) agents, undici (fetch) and tls (TLSSocket extends
// net.Socket). Its arguments come as (options, cb), (port, host, cb), (path, cb), or as the internal
// normalized array [options, cb] from net.connect().
function connectTarget(args) {
  let first = args[0];
  if (Array.isArray(first)) first = first[0];
  if (first !== null && typeof first === "object") {
    if (first.path !== undefined && first.path !== null) return null; // Unix socket: local
    return first.host === undefined ? "localhost" : first.host;
  }
  if (typeof first === "string" && !/^\d+$/.test(first)) return null; // Unix socket path
  return typeof args[1] === "string" ? args[1] : "localhost";
}

const originalConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function guardedConnect(...args) {
  const host = connectTarget(args);
  if (host === null || isLoopback(host)) return originalConnect.apply(this, args);
  const err = blockedError(host, "connect");
  process.nextTick(() => this.destroy(err));
  return this;
};
