"""Start a real dash-stream server on a free loopback port and run one bench scenario end to end.

    .venv/bin/python loadtest/run.py fanout --subscribers 1000 --rate 100 --duration 10 \
        --json fanout.json --report fanout.md --slo-p99-ms 500 --slo-loss 0

With two or more CPUs the server is pinned to CPU 0 (`taskset -c 0`) and the generator to the
others, so the generator never steals the server's core; `--no-pin` turns that off. `--profile
FILE` samples the server with py-spy while the scenario runs (collapsed stacks; needs py-spy).
Exit status: 0 when every declared SLO is met, 1 when one is missed, 2 on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec

from dash_stream import bench


class PeerProcess(bench.ServerProcess):
    """A peer server from loadtest/peers/ instead of dash-stream, started the same way."""

    script = "ws_broadcast.py"

    def command(self) -> list[str]:
        """The peer's command line (`args` are passed on)."""
        peer = Path(__file__).resolve().parent / "peers" / self.script
        cmd = [sys.executable, str(peer), "--port", str(self.port), *self.args]
        if self.cpus is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", self.cpus, *cmd]
        return cmd


PEERS: dict[str, type[bench.ServerProcess]] = {"ws-broadcast": PeerProcess}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=sorted(bench.SCENARIOS))
    for name, kind in (
        ("subscribers", int),
        ("rate", float),
        ("duration", float),
        ("workers", int),
        ("publishers", int),
        ("pub-workers", int),
        ("batch", int),
        ("payload-bytes", int),
        ("grace", float),
        ("slo-p99-ms", float),
        ("slo-loss", int),
        ("slo-dups", int),
        ("slo-min-rate", float),
        ("ramp-factor", float),
        ("max-steps", int),
        ("max-run-s", float),
        ("ramp-p99-ms", float),
        ("rss-interval", float),
        ("warmup", float),
        ("max-rss-growth-mib-per-hour", float),
    ):
        p.add_argument(f"--{name}", type=kind)
    p.add_argument("--via", choices=["ws", "http"])
    p.add_argument("--client", choices=["sansio", "asyncio"])
    p.add_argument("--json", type=Path, help="write the JSON report here")
    p.add_argument("--report", type=Path, help="write the Markdown report here")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True, help="server on CPU 0")
    p.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument (repeatable)")
    p.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the server go here")
    p.add_argument(
        "--peer",
        choices=sorted(PEERS),
        help="bench a peer server instead of dash-stream (loadtest/peers/; fanout and max-rate only)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario; the exit status of `dash-stream bench`."""
    a = _args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    pin = a.pin and len(cpus) >= 2
    overrides = {
        k: v
        for k, v in vars(a).items()
        if k not in ("scenario", "json", "report", "pin", "server_arg", "profile", "peer")
    }
    if a.peer is not None and a.scenario not in ("fanout", "max-rate"):
        raise SystemExit(f"--peer runs fanout and max-rate only, not {a.scenario}")
    server_cls = bench.ServerProcess if a.peer is None else PEERS[a.peer]
    with server_cls(args=a.server_arg, cpus=str(cpus[0]) if pin else None) as server:
        if pin:
            os.sched_setaffinity(0, set(cpus[1:]))  # the generator's processes inherit this
        cfg = bench.make_config(a.scenario, url=server.url, server_pid=server.pid, **overrides)
        with _profiler(a.profile, server.pid, cfg.duration + 3) as profiler:
            report = bench.run(cfg)
        if profiler is not None:
            print(top_frames(a.profile), file=sys.stderr)
    text = bench.markdown(report)
    if a.json is not None:
        a.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    if a.report is not None:
        a.report.write_text(text)
    print(text)
    if report.violations:
        print("SLO missed: " + "; ".join(report.violations), file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _profiler(
    out: Path | None, pid: int, seconds: float
) -> contextlib.Generator[subprocess.Popen[bytes] | None]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if out is None:
        yield None
        return
    if not Path(exe).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    cmd = [
        exe,
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(seconds) + 1),
        "-r",
        "200",
        "--nonblocking",  # sample without pausing the server
        "-f",
        "raw",
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def top_frames(collapsed: Path, n: int = 25) -> str:
    """The `n` functions with the most samples, self and total, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    lines = [f"{samples} samples; top frames by own time (own %, total %):"]
    for frame, count in own.most_common(n):
        lines.append(f"  {100 * count / samples:5.1f}  {100 * total[frame] / samples:5.1f}  {frame}")
    lines.append("top frames by total time:")
    for frame, count in total.most_common(n):
        lines.append(f"  {100 * count / samples:5.1f}  {frame}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
