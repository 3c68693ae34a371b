"""docs/api.md covers every route and frame of the served contracts, and protocol.md section 8
documents the swarm state extension."""

from __future__ import annotations

import re

from servers import REPO

from dash_stream.server import specs

DOCS = REPO / "docs"


def test_api_md_lists_every_openapi_route_and_asyncapi_frame() -> None:
    text = (DOCS / "api.md").read_text()
    for path, operations in specs.openapi()["paths"].items():
        for method in operations:
            assert f"{method.upper()} {path}" in text, f"{method.upper()} {path} is not in docs/api.md"
    for message in specs.asyncapi()["components"]["messages"].values():
        assert re.search(rf"\b{message['name']}\b", text), f"frame {message['name']} is not in docs/api.md"
    for code in specs.openapi()["components"]["schemas"]["Error"]["properties"]["error"]["properties"][
        "code"
    ]["enum"]:
        assert f"`{code}`" in text, code


def test_protocol_md_documents_the_swarm_state_extension() -> None:
    section = (DOCS / "protocol.md").read_text().split("## 8.", 1)[1]
    for needle in ('"snapshot": true', '{"op":"snapshot"', "GET /v1/swarms", "swarm.<swarm>.", "SwarmView"):
        assert needle in section, needle
