"""The dashboard's routes without a browser: headers, assets, and what is not served."""

from __future__ import annotations

import httpx
import pytest
from servers import ServerProcess

from dash_stream.server.page import ASSETS


async def test_the_page_has_a_strict_content_security_policy(
    shared_dev_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    resp = await http.get(f"{shared_dev_server.base_url}/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/web/app.js">' in resp.text
    assert "<script>" not in resp.text and "style=" not in resp.text, "no inline code (CSP)"


@pytest.mark.parametrize("name", sorted(set(ASSETS) - {"index.html"}))
async def test_every_asset_is_served_with_its_type_and_an_etag(
    shared_dev_server: ServerProcess, http: httpx.AsyncClient, name: str
) -> None:
    resp = await http.get(f"{shared_dev_server.base_url}/web/{name}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == ASSETS[name]
    again = await http.get(
        f"{shared_dev_server.base_url}/web/{name}", headers={"if-none-match": resp.headers["etag"]}
    )
    assert again.status_code == 304


@pytest.mark.parametrize("name", ["__init__.py", "..%2Fstate.py", "index.html", "nope.js"])
async def test_nothing_else_is_served(
    shared_dev_server: ServerProcess, http: httpx.AsyncClient, name: str
) -> None:
    resp = await http.get(f"{shared_dev_server.base_url}/web/{name}")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
