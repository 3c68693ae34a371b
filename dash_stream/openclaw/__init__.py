"""The OpenClaw watcher: a source that turns a gateway's live agent runs into dash-stream events.

    dash-stream openclaw watch --gateway ws://127.0.0.1:18789 --token-env OPENCLAW_GATEWAY_TOKEN
    dash-stream serve --openclaw-watch bridge.toml          # embedded, on the server's own bus

The pieces, each one idea:

- `config`: the `[openclaw]` table (its own file or the bridge's), decoded and checked at load.
- `mapping`: topic and labels of an event from rules on the run's agent id and session key.
- `translate`: pure functions from gateway frames to event drafts, and deterministic event ids.
- `runs`: the runs in flight: one `agent.started` per run, and holding a run's events until its
  origin (was it triggered by the event bridge?) is known.
- `gateway`: one authenticated gateway WebSocket (handshake, requests, frames).
- `watcher`: reconnects with backoff, takes the start-up snapshot, feeds the pipeline, publishes.
- `sinks`: where events go: a dash-stream server (SDK, acks), a bus, or stdout (dry run).
- `metrics`, `cli`, `embed`.

See docs/openclaw-watch.md.
"""
