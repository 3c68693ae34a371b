"""The OpenClaw skill `skills/dash-stream/SKILL.md`: its front matter, and every command in it run as
documented (each ```bash block, in order, through bash) against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
from helpers import scaled
from servers import DASH_STREAM, REPO, ServerProcess, server_env

SKILL = REPO / "skills" / "dash-stream" / "SKILL.md"


def front_matter(text: str) -> dict[str, Any]:
    """The `key: value` lines between the opening `---` lines; `metadata` is JSON (as OpenClaw reads it)."""
    assert text.startswith("---\n"), "SKILL.md starts with YAML front matter"
    head = text[4 : text.index("\n---\n", 4)]
    doc: dict[str, Any] = {}
    for line in head.splitlines():
        key, sep, value = line.partition(":")
        assert sep and key.strip() == key, f"front matter line {line!r} is not `key: value`"
        doc[key] = value.strip()
    doc["metadata"] = json.loads(doc["metadata"])
    return doc


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


def kind_of(block: str) -> str:
    """Which documented command a block runs."""
    for marker, kind in (("swarm status", "status"), ("swarm list", "list"), ("--mention", "inbox")):
        if marker in block:
            return kind
    return "failures" if "--type" in block else "agent"


def test_the_skill_front_matter_follows_the_openclaw_format() -> None:
    doc = front_matter(SKILL.read_text())
    assert doc["name"] == SKILL.parent.name == "dash-stream"
    assert re.fullmatch(r"[a-z0-9-]+", doc["name"])
    assert 20 < len(doc["description"]) < 160, "one line under 160 characters"
    assert doc["metadata"]["openclaw"]["requires"]["bins"] == ["dash-stream"]
    assert doc["metadata"]["openclaw"]["primaryEnv"] == "DASH_TOKEN"


def test_every_command_of_the_skill_runs_as_documented(
    shared_dev_server: ServerProcess, tmp_path: Path
) -> None:
    text = SKILL.read_text()
    blocks = bash_blocks(text)
    assert len(blocks) >= 7, blocks
    swarm, agent = f"s{uuid.uuid4().hex[:6]}", f"a{uuid.uuid4().hex[:6]}"
    env = server_env(
        {
            "PATH": f"{DASH_STREAM.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DASH_URL": shared_dev_server.base_url,
            "SWARM": swarm,
            "AGENT": agent,
            "HOME": str(tmp_path),
            "NO_COLOR": "1",
        }
    )
    mention = {
        "topic": f"swarm.{swarm}.chat",
        "type": "note",
        "priority": "high",
        "labels": {"mentions": f"@{agent},@oncall"},
        "data": {"text": "please look at t-42"},
    }
    with httpx.Client(trust_env=False, timeout=scaled(30)) as client:
        assert client.post(f"{shared_dev_server.base_url}/v1/events", json=mention).status_code == 202

    outputs: dict[str, Any] = {}

    def run(block: str) -> str:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert proc.returncode == 0, f"{block}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    for block in blocks:
        out = run(block)
        if "--json" in block:
            doc = json.loads(out)
            assert "error" not in doc, (block, doc)
            outputs[kind_of(block)] = doc

    status = outputs["status"]
    agents = {a["agent_id"]: a for a in status["agents"]}
    assert agents[agent]["status"] == "failed" and agents[agent]["reason"] == "out of memory"
    assert status["tasks_completed"] == 1 and status["tasks_running"] == []
    assert status["last_error"]["type"] == "agent.failed"
    assert swarm in [s["swarm_id"] for s in outputs["list"]["swarms"]]
    mine = outputs["agent"]
    assert [e["type"] for e in mine["events"]] == [
        "agent.started",
        "task.started",
        "task.completed",
        "agent.failed",
    ]
    assert [e["type"] for e in outputs["failures"]["events"]] == ["agent.failed"]
    inbox = outputs["inbox"]
    assert [e["data"]["text"] for e in inbox["events"]] == ["please look at t-42"]
    again = json.loads(run(next(b for b in blocks if "--mention" in b)))
    assert again["count"] == 0, "the cursor file remembers what was read"
