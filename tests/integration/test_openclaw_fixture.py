"""The integration fixtures work against a real OpenClaw gateway: delivery, auth, replay, faults."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from .fault_proxy import FaultProxyFactory
from .mock_llm import MockLLM
from .openclaw import Gateway

pytestmark = pytest.mark.integration


def new_marker(label: str) -> str:
    """A unique marker made only of [A-Za-z0-9_-], so it needs no JSON escaping in the LLM log."""
    return f"{label}-{secrets.token_hex(6)}"


def test_agent_hook_reaches_the_mock_llm(openclaw_gateway: Gateway, mock_llm: MockLLM) -> None:
    marker = new_marker("deliver")

    response = openclaw_gateway.post_agent(f"Build finished: {marker}", sessionKey="hook:fixture")

    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    assert response.json()["runId"]
    [request] = mock_llm.wait_for_marker(marker, timeout=60)
    assert request["model"] == "echo"
    assert request["stream"] is True
    assert marker in json.dumps(request["messages"][1])  # the hook message is the first user turn


def test_wrong_hooks_token_is_rejected_with_401(openclaw_gateway: Gateway) -> None:
    response = openclaw_gateway.post_agent("never delivered", token="not-the-hooks-token")

    assert response.status_code == 401
    assert response.text == "Unauthorized"
    openclaw_gateway.reset_hook_auth_throttle()


def test_same_idempotency_key_replays_the_run_without_running_it_again(
    openclaw_gateway: Gateway, mock_llm: MockLLM
) -> None:
    marker = new_marker("replay")
    headers = {"Idempotency-Key": f"key-{marker}"}

    # waitForCompletion: each answer comes after its run finished, so a second run would have
    # reached the mock LLM before the second answer, and no waiting is needed to rule it out.
    first = openclaw_gateway.post_agent(marker, headers=headers, waitForCompletion=True, timeout=90)
    second = openclaw_gateway.post_agent(marker, headers=headers, waitForCompletion=True, timeout=90)

    assert first.status_code == 200, first.text
    assert first.json()["completion"]["status"] == "ok"
    assert second.status_code == 200, second.text
    assert second.json()["runId"] == first.json()["runId"]
    assert mock_llm.count_marker(marker) == 1


def test_fault_proxy_answers_503_then_forwards_headers_verbatim(
    openclaw_gateway: Gateway, mock_llm: MockLLM, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy()
    proxy.fail_next(503)
    marker = new_marker("proxy")
    headers = {
        "Idempotency-Key": f"key-{marker}",
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
    }

    failed = openclaw_gateway.post_agent(marker, headers=headers, base_url=proxy.url)
    forwarded = openclaw_gateway.post_agent(marker, headers=headers, base_url=proxy.url)

    assert failed.status_code == 503
    assert forwarded.status_code == 200, forwarded.text
    assert forwarded.json()["runId"]
    mock_llm.wait_for_marker(marker, timeout=60)
    seen = proxy.requests
    assert [request.outcome for request in seen] == ["fault:503", "forwarded:200"]
    for request in seen:
        assert (request.method, request.path) == ("POST", "/hooks/agent")
        assert request.header("authorization") == f"Bearer {openclaw_gateway.hooks_token}"
        assert request.header("idempotency-key") == headers["Idempotency-Key"]
        assert request.header("traceparent") == headers["traceparent"]
        assert request.json()["message"] == marker


@pytest.mark.parametrize("status", [429, 503, 500, 408])
def test_fault_proxy_injects_status_without_reaching_upstream(
    openclaw_gateway: Gateway, fault_proxy: FaultProxyFactory, status: int
) -> None:
    proxy = fault_proxy()
    proxy.fail_next(status, retry_after=7 if status == 429 else None)

    response = openclaw_gateway.post_agent("never delivered", base_url=proxy.url)

    assert response.status_code == status
    assert response.headers.get("retry-after") == ("7" if status == 429 else None)
    assert [request.outcome for request in proxy.requests] == [f"fault:{status}"]


def test_fault_proxy_drops_the_connection(openclaw_gateway: Gateway, fault_proxy: FaultProxyFactory) -> None:
    proxy = fault_proxy()
    proxy.drop_next()

    with pytest.raises(httpx.RemoteProtocolError):
        openclaw_gateway.post_agent("never delivered", base_url=proxy.url)

    assert [request.outcome for request in proxy.requests] == ["dropped"]


def test_mock_llm_scripted_failure_is_consumed_by_the_matching_run(
    openclaw_gateway: Gateway, mock_llm: MockLLM
) -> None:
    marker = new_marker("llm400")
    mock_llm.fail_next(400, match=marker)

    response = openclaw_gateway.post_agent(marker, waitForCompletion=True, timeout=90)

    assert response.status_code == 200, response.text
    assert response.json()["completion"]["status"] == "error"
    replies = [request.reply for request in mock_llm.requests if marker in request.raw]
    assert replies[0] == "error:400"


def test_mock_llm_tool_call_makes_the_gateway_run_the_tool(
    openclaw_gateway: Gateway, mock_llm: MockLLM
) -> None:
    marker = new_marker("tool")
    mock_llm.tool_call_next("ls", {"path": "."}, match=marker)

    response = openclaw_gateway.post_agent(marker, waitForCompletion=True, timeout=90)

    assert response.status_code == 200, response.text
    assert response.json()["completion"]["status"] == "ok"
    runs = [request for request in mock_llm.requests if marker in request.raw]
    assert [request.reply for request in runs] == ["tool_call", "text"]
    assert runs[1].body is not None
    assert any(message["role"] == "tool" for message in runs[1].body["messages"])


def test_gateway_restarts_on_the_same_port_with_the_same_tokens(
    openclaw_gateway: Gateway, mock_llm: MockLLM
) -> None:
    """Runs last in this module: it replaces the session gateway's process."""
    before = (openclaw_gateway.port, openclaw_gateway.hooks_token, openclaw_gateway.gateway_token)
    old_processes = openclaw_gateway.processes()
    assert openclaw_gateway.pid in old_processes

    openclaw_gateway.restart()

    assert (openclaw_gateway.port, openclaw_gateway.hooks_token, openclaw_gateway.gateway_token) == before
    assert old_processes.isdisjoint(openclaw_gateway.processes())
    marker = new_marker("restart")
    assert openclaw_gateway.post_agent(marker).status_code == 200
    mock_llm.wait_for_marker(marker, timeout=60)
