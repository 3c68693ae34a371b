"""Durations in config files, written Go/Prometheus style: "500ms", "2s", "1h30m", "7d".

Shared by the bridge's and the OpenClaw watcher's config loaders (msgspec `dec_hook`s).
"""

from __future__ import annotations

import re
from typing import Final

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class Duration(float):
    """Seconds, written in a config file as a duration string."""


def parse_duration(text: object) -> Duration:
    """Seconds from "2s" / "1h30m" / "250ms" ("0" is zero); ValueError with the expected shape otherwise."""
    if isinstance(text, str):
        stripped = text.strip()
        if stripped == "0":
            return Duration(0.0)
        pos, total = 0, 0.0
        for m in _DURATION.finditer(stripped):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        else:
            if pos == len(stripped) and pos > 0:
                return Duration(total)
    raise ValueError('expected a duration like "2s" (units ms, s, m, h, d; e.g. "1h30m")')
