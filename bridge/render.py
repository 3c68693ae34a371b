"""Transform: render a flushed group into a `Message`, and split messages that are too large.

A single event renders as the route's `title` and `text`; a digest as `digest_title`, a summary
line (counts per type, worst priority, first and last time), the top items (identical lines
merged with a count, worst priority first), links, mentions, and how many events of the group
were not forwarded. Every message then lists every source event's offset and traceparent, and
ends with the origin marker (`origin: dash-bridge`) and its id. Rendering reads no clock and no
randomness: the same events always give the same text, hence the same idempotency key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final

import msgspec
import orjson

from bridge.config import Badges
from bridge.digest import Flush
from bridge.model import Message, SourceRef, message_id, part_id
from bridge.rules import parse_mentions
from dash_stream.events import PRIORITY_RANK, Event

MAX_LINE_CHARS: Final = 1000
TRUNCATED: Final = " …[truncated]"
_SLACK: Final = 160  # bytes for the part and sources lines whose digits are not known yet


def badge(badges: Badges, priority: str) -> str:
    """The badge text of a priority."""
    text: str = getattr(badges, priority, priority)
    return text


def _line(text: str) -> str:
    text = " ".join(text.split())  # one line: no newlines smuggled in through event fields
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + TRUNCATED


def _mentions(events: list[Event]) -> list[str]:
    out: list[str] = []
    for ev in events:
        for name in parse_mentions(ev.labels.get("mentions")):
            if name not in out:
                out.append(name)
    return out


def _worst(events: list[Event]) -> str:
    return max((ev.priority for ev in events), key=PRIORITY_RANK.__getitem__)


def build_message(flush: Flush, *, badges: Badges, origin: str, now: float) -> Message:
    """The message for one flush of a group (one event or a digest)."""
    route, events = flush.route, flush.events
    offsets = [ev.offset or "" for ev in events]
    msg_id = message_id(flush.claim, flush.key, offsets)
    worst = _worst(events)
    mentions = _mentions(events)
    times = sorted(ev.time for ev in events)
    types = Counter(ev.type for ev in events)
    context = {
        "badge": badge(badges, worst),
        "route": route.id,
        "receiver": flush.target.receiver,
        "count": str(len(events)),
        "group": flush.label,
        "mentions": " ".join(mentions),
        "first_time": times[0],
        "last_time": times[-1],
        "types": ", ".join(f"{t} x{n}" for t, n in types.most_common()),
        "worst_priority": worst,
        "origin": origin,
    }
    first = events[0]
    lines: list[str] = []
    if len(events) == 1:
        lines.append(_line(route.title.render(first, context)))
        lines.append(_line(route.text.render(first, context)))
    else:
        lines.append(_line(route.digest_title.render(first, context)))
        lines.append(f"counts: {context['types']} | worst: {worst} | first: {times[0]} | last: {times[-1]}")
        lines.extend(_top_items(flush, badges))
    lines.extend(_line(link.render(first, context)) for link in route.links)
    if mentions:
        lines.append("mentions: " + " ".join(mentions))
    if flush.suppressed:
        lines.append(
            f"not forwarded in this group since the last message: {flush.suppressed} (dedup/inhibit/throttle)"
        )
    return Message(
        id=msg_id,
        route=route.id,
        group=flush.label,
        target=flush.target,
        priority=worst,  # type: ignore[arg-type]
        count=len(events),
        head="\n".join(lines),
        sources=tuple(
            SourceRef(
                offset=o,
                claim=flush.claim,
                traceparent=ev.traceparent,
                tracestate=ev.tracestate,
                topic=ev.topic,
                event_id=ev.id,
            )
            for o, ev in zip(offsets, events, strict=True)
        ),
        origin=origin,
        created=now,
    )


def _top_items(flush: Flush, badges: Badges) -> list[str]:
    """Identical item lines merged with a count; worst priority, then most frequent, first."""
    route = flush.route
    seen: dict[str, list[int]] = {}  # line -> [count, worst rank, first index]
    for i, ev in enumerate(flush.events):
        text = _line(route.text.render(ev, None))
        rank = PRIORITY_RANK[ev.priority]
        entry = seen.get(text)
        if entry is None:
            seen[text] = [1, rank, i]
        else:
            entry[0] += 1
            entry[1] = max(entry[1], rank)
    ranked = sorted(seen.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[1][2]))
    ranks = {v: k for k, v in PRIORITY_RANK.items()}
    out = ["top items:"]
    for text, (count, rank, _) in ranked[: route.max_items]:
        out.append(f"- {badge(badges, ranks[rank])} {text}" + (f" (x{count})" if count > 1 else ""))
    if len(ranked) > route.max_items:
        out.append(f"- ...and {len(ranked) - route.max_items} more distinct items")
    return out


# ---------------------------------------------------------------- splitting


Measure = Callable[[Message], int]


def _cost(text: str) -> int:
    """Bytes a line adds to a JSON string (escaped, plus the escaped newline)."""
    return len(orjson.dumps(text)) - 2 + 2


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes (marker included), on a character boundary."""
    if len(text.encode()) <= max_bytes:
        return text
    keep = max(0, max_bytes - len(TRUNCATED.encode()))
    return text.encode()[:keep].decode(errors="ignore") + TRUNCATED


def split_message(message: Message, limit: int, measure: Measure) -> list[Message]:
    """Parts of `message` whose measured size fits `limit`: sources are spread over parts, and a
    head too large for any part is truncated. Deterministic for a given message and limit."""
    if measure(message) <= limit:
        return [message]
    empty = msgspec.structs.replace(message, sources=(), parts=2)
    lines = [f"- {s.offset} traceparent {s.traceparent or '-'}" for s in message.sources]
    widest = max((_cost(line) for line in lines), default=0)
    room = limit - measure(empty) - _SLACK
    head = message.head
    if room < widest:  # the head leaves no room for even one source: shorten it
        bare = measure(msgspec.structs.replace(empty, head=""))
        head = truncate_utf8(head, max(0, (limit - bare - _SLACK - widest) // 2))
        room = limit - measure(msgspec.structs.replace(empty, head=head)) - _SLACK
    chunks: list[list[SourceRef]] = [[]]
    used = 0
    for src, line in zip(message.sources, lines, strict=True):
        cost = _cost(line)
        if chunks[-1] and used + cost > room:
            chunks.append([])
            used = 0
        chunks[-1].append(src)
        used += cost
    n = len(chunks)
    first_line = head.split("\n", 1)[0]
    parts = [
        msgspec.structs.replace(
            message,
            id=part_id(message.id, i + 1, n) if n > 1 else message.id,
            head=head if i == 0 else f"{first_line} (continued)",
            sources=tuple(chunk),
            part=i + 1,
            parts=n,
        )
        for i, chunk in enumerate(chunks)
    ]
    for i, part in enumerate(parts):
        while measure(part) > limit and len(part.head) > 16:  # a last resort; rarely taken
            part = msgspec.structs.replace(part, head=truncate_utf8(part.head, len(part.head.encode()) // 2))
        parts[i] = part
    return parts
