// Typings of dash-client.js, the dash-stream WebSocket client (subprotocol dash.v1.json).

export const SUBPROTOCOL: "dash.v1.json";

export type Priority = "low" | "normal" | "high" | "critical";

/** An event as the server delivers it (docs/protocol.md section 1). */
export interface DashEvent {
  id: string;
  topic: string;
  type: string;
  source: string;
  time: string;
  priority: Priority;
  labels?: Record<string, string>;
  data?: unknown;
  traceparent?: string;
  tracestate?: string;
  /** The event's position; also a cursor. */
  offset: string;
}

/** An event as a publisher sends it: only `topic` and `type` are required. */
export interface EventIn {
  topic: string;
  type: string;
  id?: string;
  source?: string;
  time?: string;
  priority?: Priority;
  labels?: Record<string, string>;
  data?: unknown;
}

/** The structured filter of docs/protocol.md section 6. */
export type Where = Record<string, unknown>;

export interface AgentView {
  agent_id: string;
  status: "spawned" | "running" | "completed" | "failed" | "killed" | "unknown";
  last_type: string;
  last_event_time: string;
  last_offset: string;
  session_key?: string | null;
  reason?: string | null;
}

export interface TaskView {
  task_id: string;
  agent_id?: string | null;
  started_time: string;
  last_event_time: string;
  last_offset: string;
}

export interface ErrorView {
  type: string;
  message: string;
  time: string;
  offset: string;
  priority?: Priority;
  agent_id?: string | null;
  task_id?: string | null;
}

export interface RateView {
  window_s: number;
  events: number;
  per_s: number;
  by_type: Record<string, number>;
  /** Events per second over the window, oldest first. */
  series: number[];
}

/** The live state of one swarm (GET /v1/swarms/{id}, and the `snapshot` frame). */
export interface SwarmView {
  swarm_id: string;
  status?: string | null;
  status_message?: string | null;
  status_time?: string | null;
  expected_agents?: number | null;
  agent_counts: Record<string, number>;
  agents: AgentView[];
  tasks_running: TaskView[];
  tasks_completed: number;
  tasks_failed: number;
  last_error?: ErrorView | null;
  rates: RateView;
  events: number;
  last_event_time: string;
  last_offset: string;
  evicted_agents?: number;
  evicted_tasks?: number;
}

export interface SnapshotFrame {
  op: "snapshot";
  sub: string;
  cursor: string;
  swarms: SwarmView[];
}

export interface SubscribedInfo {
  cursor: string;
  recovered: boolean;
  reason: string | null;
  replayed: number;
  /** True when this answers a resubscription after a reconnect. */
  resumed: boolean;
}

export interface SubscriptionInfo {
  sub: string;
  cursor: string | null;
  recovered: boolean | null;
  reason: string | null;
  replayed: number;
  snapshot: SnapshotFrame | null;
}

export interface SubscribeOptions {
  where?: Where;
  /** Resume after this cursor (replays what came after it). */
  cursor?: string;
  /** Without a cursor: "latest" (default, live only) or "earliest" (all retained history). */
  from?: "latest" | "earliest";
  /** Start with a `snapshot` frame of the live swarm state; not with `cursor` or `from`. */
  snapshot?: boolean;
  /** The subscription id (`sub`); generated when absent. */
  id?: string;
  /** Iterator mode: events held for a slow consumer before resubscribing from what it took. */
  maxBufferedEvents?: number;
  onEvent?: (event: DashEvent, sub: Subscription) => void;
  onBatch?: (events: DashEvent[], cursor: string | null, sub: Subscription) => void;
  onSnapshot?: (snapshot: SnapshotFrame, sub: Subscription) => void;
  onSubscribed?: (info: SubscribedInfo, sub: Subscription) => void;
  /** A resume was not honoured (`recovered: false`): events may be missing (`reason` says why). */
  onGap?: (gap: { reason: string | null; cursor: string }, sub: Subscription) => void;
  onError?: (error: DashError, sub: Subscription) => void;
}

export class Subscription implements AsyncIterable<DashEvent> {
  readonly sub: string;
  readonly topics: string[];
  readonly where: Where | null;
  /** The position after the last event delivered (send it back to resume). */
  cursor: string | null;
  recovered: boolean | null;
  reason: string | null;
  replayed: number;
  snapshot: SnapshotFrame | null;
  closed: boolean;
  error: DashError | null;
  /** Resolves on the first `subscribed` (after the snapshot when one was asked for). */
  readonly ready: Promise<SubscriptionInfo>;
  unsubscribe(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<DashEvent>;
}

export type ClientState = "idle" | "connecting" | "unauthorized" | "open" | "reconnecting" | "closed" | "failed";

export interface StateChange {
  state: ClientState;
  attempt?: number;
  closeCode?: number;
  reason?: string;
  message?: string | null;
  delayMs?: number;
  session?: string | null;
  error?: DashError;
}

export interface ClientOptions {
  /** A JWT (or, over HTTP only, an API key); sent in an `auth` op, never in the URL. */
  token?: string;
  /** Called for every connection and before the token expires (then a `refresh` op is sent). */
  tokenProvider?: () => Promise<string> | string;
  /** A WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: typeof WebSocket;
  backoff?: { initialMs?: number; maxMs?: number };
  requestTimeoutMs?: number;
  maxInFlight?: number;
  random?: () => number;
}

export class DashError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly retryAfterMs: number | null;
  readonly closeCode: number | null;
  constructor(
    code: string,
    message: string,
    options?: { retryable?: boolean; retryAfterMs?: number | null; closeCode?: number | null },
  );
}

export interface Ack {
  offset: string;
  duplicate: boolean;
  id: string;
}

export class DashClient {
  constructor(url: string, options?: ClientOptions);
  static websocketUrl(url: string): string;
  readonly url: string;
  readonly state: ClientState;
  readonly session: string | null;
  readonly welcome: Record<string, unknown> | null;
  readonly principal: { sub: string; exp: number | null } | null;
  readonly reconnects: number;
  readonly lastClose: { code: number; reason: string } | null;
  connect(): Promise<DashClient>;
  close(): void;
  setToken(token: string): void;
  refresh(token: string): Promise<Record<string, unknown>>;
  subscribe(topics: string[], options?: SubscribeOptions): Subscription;
  publish(event: EventIn): Promise<Ack>;
  ping(): Promise<void>;
  on(type: "state", listener: (change: StateChange) => void): () => void;
  on(type: "welcome", listener: (welcome: Record<string, unknown>) => void): () => void;
  on(type: "authed", listener: (principal: { sub: string; exp: number | null }) => void): () => void;
  on(type: "gap", listener: (gap: { sub: string; reason: string | null }) => void): () => void;
  on(type: "error", listener: (error: unknown) => void): () => void;
}

export function parseCursor(text: string): { epoch: string; positions: Map<number, bigint> } | null;
export function covers(cursor: string | null, offset: string | null): boolean;
export function later(cursor: string | null, other: string | null): string | null;
export function advance(cursor: string | null, offset: string | null): string | null;
export function shouldReconnect(code: number): boolean;
export function parseCloseReason(reason: string): {
  code: string | null;
  retryAfterMs: number | null;
  message: string | null;
};
