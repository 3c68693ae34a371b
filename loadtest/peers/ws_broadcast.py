"""A raw `websockets` broadcast server: the Python ceiling for `fanout`, next to dash-stream.

It speaks only the subset of the dash protocol that the bench generator (dash_stream/bench.py)
uses, so the same generator measures it:

- on connect: `{"op":"welcome"}`;
- `subscribe` → `{"op":"subscribed","recovered":true}` and the connection joins the one broadcast
  set (topics, `where` and cursors are ignored: every subscriber gets every event);
- `publish` → the event is wrapped, unvalidated, in an `events` frame and sent to every subscriber
  with `websockets.broadcast` (no per-subscriber queue, no backpressure, no log, no replay), then
  `{"op":"ack","id":...}`.

No validation, persistence, resume, auth or limits: it shows what Python + `websockets` costs for
the fan-out alone. Only `fanout` (and `max-rate`) runs are meaningful against it.

    .venv/bin/python loadtest/peers/ws_broadcast.py --port 8090 &
    .venv/bin/dash-stream bench fanout --url ws://127.0.0.1:8090 --subscribers 1000 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.typing import Subprotocol


class _Frame(msgspec.Struct):
    op: str
    id: str | None = None
    event: msgspec.Raw = msgspec.Raw()


_DECODE = msgspec.json.Decoder(_Frame)
SUBSCRIBERS: set[ServerConnection] = set()
_seq = 0
_SUBPROTOCOL = Subprotocol("dash.v1.json")


async def handler(ws: ServerConnection) -> None:
    """One connection: answer subscribe and publish frames; publishes are broadcast at once."""
    global _seq
    await ws.send('{"op":"welcome","session":"peer"}')
    try:
        async for message in ws:
            try:
                frame = _DECODE.decode(message)
            except msgspec.MsgspecError:
                await ws.send('{"op":"error","code":"bad_request","retryable":false}')
                continue
            rid = msgspec.json.encode(frame.id)
            if frame.op == "publish" and len(frame.event):
                _seq += 1
                events = b'{"op":"events","sub":"b","events":[%s],"cursor":"%d"}' % (frame.event, _seq)
                broadcast(SUBSCRIBERS, events, text=True)
                await ws.send(b'{"op":"ack","id":%s,"offset":%d}' % (rid, _seq), text=True)
            elif frame.op == "subscribe":
                SUBSCRIBERS.add(ws)
                subscribed = b'{"op":"subscribed","id":%s,"sub":"b","cursor":"%d","recovered":true}'
                await ws.send(subscribed % (rid, _seq), text=True)
            else:
                await ws.send(b'{"op":"ack","id":%s}' % rid, text=True)
    finally:
        SUBSCRIBERS.discard(ws)


def _select_subprotocol(ws: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    return _SUBPROTOCOL if _SUBPROTOCOL in offered else None  # the bench's publishers offer none


async def main(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        host,
        port,
        select_subprotocol=_select_subprotocol,
        compression=None,
        max_size=1 << 20,
        max_queue=None,
    ):
        print(f"ws_broadcast listening on ws://{host}:{port}", flush=True)
        await stop


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(main(a.host, a.port))
        else:
            uvloop.run(main(a.host, a.port))
