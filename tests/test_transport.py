"""The transport and its retry decisions: backoff, ``Retry-After``, bounded attempts, error wording, the key never shown."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import llm
import llm.cli
import pytest
from api_mock import (
    CHAT_URL,
    SSE_HEADERS,
    chunk,
    sse,
)
from conftest import SENTINEL_KEY, assert_cli_error, json_escaped
from fake_mistral import RawReply, chat_completion, chat_stream_events

from _llm_mistral_suite.errors import MistralSuiteError
from _llm_mistral_suite.retry import backoff_delay, parse_retry_after

# --- retries ---------------------------------------------------------------------------------------


def _timed(status_or_response, times: list[float], **kwargs):
    def callback(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if isinstance(status_or_response, httpx.Response):
            return status_or_response
        return httpx.Response(status_or_response, **kwargs)

    return callback


@pytest.mark.parametrize("stream", [False, True])
def test_429_retry_after_is_honoured(mock, key, stream):
    times: list[float] = []
    mock.add_callback(_timed(429, times, headers={"Retry-After": "0.3"},
                             json={"object": "error", "message": "Requests rate limit exceeded", "code": "3505"}))
    ok = (httpx.Response(200, headers=SSE_HEADERS, content=sse(*chat_stream_events(["done"]))) if stream
          else httpx.Response(200, json=chat_completion("done")))
    mock.add_callback(_timed(ok, times))
    assert llm.get_model("mistral-large").prompt("hi", stream=stream).text() == "done"
    waited = times[1] - times[0]
    assert 0.3 <= waited < 2.0, waited  # the backoff alone would be <= 0.01 s here


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("stream", [False, True])
def test_server_errors_are_retried(mock, key, status, stream):
    mock.add_response(url=CHAT_URL, status_code=status, json={"object": "error", "message": "busy"})
    mock.add_response(url=CHAT_URL, status_code=503, text="Service Unavailable")
    if stream:
        mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*chat_stream_events(["fine"])))
    else:
        mock.add_response(url=CHAT_URL, json=chat_completion("fine"))
    assert llm.get_model("mistral-large").prompt("hi", stream=stream).text() == "fine"
    assert len(mock.get_requests()) == 3
    assert len({r.content for r in mock.get_requests()}) == 1  # the same body each time


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadError("connection reset"),
                                 httpx.RemoteProtocolError("server disconnected")])
def test_connection_errors_are_retried(mock, key, exc):
    mock.add_exception(exc)
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*chat_stream_events(["back"])))
    assert llm.get_model("mistral-large").prompt("hi").text() == "back"
    assert len(mock.get_requests()) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
@pytest.mark.parametrize("stream", [False, True])
def test_client_errors_are_not_retried(mock, key, status, stream):
    mock.add_response(url=CHAT_URL, status_code=status,
                      json={"object": "error", "message": f"nope {status}", "type": "invalid_request_error"})
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi", stream=stream).text()
    assert len(mock.get_requests()) == 1
    assert str(status) in str(info.value)


@pytest.mark.parametrize("attempts", [1, 3])
def test_attempts_are_bounded(mock, key, monkeypatch, attempts):
    monkeypatch.setenv("LLM_MISTRAL_MAX_ATTEMPTS", str(attempts))
    mock.add_response(url=CHAT_URL, status_code=503, json={"message": "overloaded"}, is_reusable=True)
    with pytest.raises(MistralSuiteError, match="503") as info:
        llm.get_model("mistral-large").prompt("hi").text()
    assert len(mock.get_requests()) == attempts
    assert f"after {attempts} attempts" in str(info.value) and "overloaded" in str(info.value)


def test_default_attempts_is_five(mock, key):
    mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    with pytest.raises(MistralSuiteError, match="not reachable.*after 5 attempts"):
        llm.get_model("mistral-large").prompt("hi").text()
    assert len(mock.get_requests()) == 5


def test_too_long_retry_after_fails_at_once(mock, key):
    mock.add_response(url=CHAT_URL, status_code=429, headers={"Retry-After": "120"}, json={"message": "slow down"})
    started = time.monotonic()
    with pytest.raises(MistralSuiteError, match="120 s"):
        llm.get_model("mistral-large").prompt("hi").text()
    assert time.monotonic() - started < 2 and len(mock.get_requests()) == 1


def test_retry_after_parsing_and_backoff(monkeypatch):
    assert parse_retry_after("0.3") == 0.3
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert 8 < parse_retry_after(
        time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))) <= 10
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    monkeypatch.setenv("LLM_MISTRAL_BACKOFF", "1")
    for attempt in (1, 2, 3, 4):
        delays = [backoff_delay(attempt, None) for _ in range(200)]
        assert all(0 <= d <= 2 ** (attempt - 1) for d in delays) and len(set(delays)) > 100  # full jitter
    assert max(backoff_delay(20, None) for _ in range(200)) <= 30
    assert backoff_delay(3, 0.25) == 0.25


# --- error messages --------------------------------------------------------------------------------

DETAIL = [{"loc": ["body", "temperature"], "msg": "Input should be less than or equal to 1.5",
           "type": "less_than_equal"}]


@pytest.mark.parametrize("body, said", [
    ({"detail": "Unauthorized"}, "Unauthorized"),
    ({"message": "Unauthorized", "request_id": "abc"}, "Unauthorized"),
    ({"message": "API key expired on 2026-01-31", "request_id": "abc"}, "API key expired on 2026-01-31"),
    (None, ""),
])  # fmt: skip
def test_401_says_how_to_set_the_key_and_what_the_service_said(mock, key, body, said):
    mock.add_response(url=CHAT_URL, status_code=401, **({"json": body} if body else {}))
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi").text()
    message = str(info.value)
    assert "llm keys set mistral" in message and "401" in message and said in message
    assert info.value.detail == said


@pytest.mark.parametrize("body", [
    {"object": "error", "message": DETAIL[0]["msg"], "type": "invalid_request_error", "param": None, "code": "3210"},
    {"object": "error", "message": {"detail": DETAIL}, "type": "invalid_request_error", "param": None, "code": None},
    {"object": "error", "message": json.dumps({"detail": DETAIL}), "type": "invalid_request_error", "code": 3210},
    {"detail": DETAIL},
])  # fmt: skip
def test_422_shows_the_services_message(mock, key, body):
    mock.add_response(url=CHAT_URL, status_code=422, json=body)
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi", stream=False).text()
    message = str(info.value)
    assert "422" in message and "Input should be less than or equal to 1.5" in message
    assert "{" not in message  # the message, not the raw JSON
    if "detail" in json.dumps(body):
        assert "temperature" in message


def test_400_and_404_messages(mock, key):
    mock.add_response(url=CHAT_URL, status_code=400, json={
        "object": "error", "message": "Prompt contains 300000 tokens, too large for model with 262144 maximum",
        "type": "invalid_request_error", "param": None, "code": 3051})
    mock.add_response(url=CHAT_URL, status_code=404, json={
        "object": "error", "message": "Invalid model: mistral-large-latest", "type": "invalid_model", "code": "1500"})
    model = llm.get_model("mistral-large")
    with pytest.raises(MistralSuiteError, match="400.*too large for model"):
        model.prompt("hi").text()
    with pytest.raises(MistralSuiteError, match="404.*Invalid model.*llm mistral refresh"):
        model.prompt("hi").text()


def test_non_json_success_body_is_a_clear_error(mock, key):
    mock.add_response(url=CHAT_URL, text="<html>proxy error</html>")
    with pytest.raises(MistralSuiteError, match="not JSON"):
        llm.get_model("mistral-large").prompt("hi", stream=False).text()


ECHO = f"Invalid API key: {SENTINEL_KEY} (Bearer {SENTINEL_KEY})"


# The key straddling the places where messages are cut short (200 and 500 characters).
LONG_ECHOES = ["x" * n + SENTINEL_KEY for n in (150, 170, 185, 190, 450, 470, 480, 490)]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500])
def test_key_never_in_error_even_if_echoed(mock, key, monkeypatch, status):
    monkeypatch.setenv("LLM_MISTRAL_MAX_ATTEMPTS", "2")
    mock.add_response(url=CHAT_URL, status_code=status, is_reusable=True,
                      json={"object": "error", "message": ECHO, "detail": ECHO})
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi").text()
    assert SENTINEL_KEY not in str(info.value) and SENTINEL_KEY not in repr(info.value.args)


@pytest.mark.parametrize("stream, content", [
    (True, sse(chunk({"content": "a"}), json.dumps({"object": "error", "message": ECHO}))),
    (True, sse(chunk({"content": "a"}), "not json " + ECHO)),
    (False, ECHO.encode()),
])  # fmt: skip
def test_key_never_in_body_errors_even_if_echoed(mock, key, stream, content):
    mock.add_response(url=CHAT_URL, content=content, headers=SSE_HEADERS if stream else {})
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi", stream=stream).text()
    assert SENTINEL_KEY not in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("echo", LONG_ECHOES)
def test_key_never_in_error_even_in_part(mock, key, stream, echo):
    """A key cut in half by truncation would still leak its first characters."""
    prefix = SENTINEL_KEY[:8]
    mock.add_response(url=CHAT_URL, status_code=400, json={"message": echo})
    mock.add_response(url=CHAT_URL, content=(sse(echo) if stream else echo.encode()),
                      headers=SSE_HEADERS if stream else {})
    model = llm.get_model("mistral-large")
    for _ in range(2):
        with pytest.raises(MistralSuiteError) as info:
            model.prompt("hi", stream=stream).text()
        assert prefix not in str(info.value)


# --- issue 10: the key stays hidden however it is echoed; local errors, read timeouts, redirects ---------------


@pytest.mark.parametrize("prefix", ["", "x" * 480])  # the second straddles the 500-character cut
def test_an_sse_error_event_with_the_key_json_escaped_never_shows_it(mock, key, prefix):
    event = '{"object": "error", "message": ' + json_escaped(f"{prefix}Bad key {SENTINEL_KEY}") + "}"
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(chunk({"content": "a"}), event))
    with pytest.raises(MistralSuiteError, match="mid-stream") as info:
        llm.get_model("mistral-large").prompt("hi").text()
    assert SENTINEL_KEY[:8] not in str(info.value)
    if not prefix:
        assert "Bad key [key]" in str(info.value)


@pytest.mark.parametrize("data", [
    '{"detail": ' + json_escaped(f"Bad key {SENTINEL_KEY}") + "}",  # no "choices": a malformed chunk, quoted
    '{"detail": ' + json_escaped(f"{'x' * 170}Bad key {SENTINEL_KEY}") + "}",  # the key across the 200 cut
    '{"detail": ' + json_escaped(f"Bad key {SENTINEL_KEY}"),  # not even JSON
])  # fmt: skip
def test_a_malformed_chunk_with_the_key_json_escaped_never_shows_it(mock, key, data):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(chunk({"content": "a"}), data))
    with pytest.raises(MistralSuiteError, match="malformed stream chunk") as info:
        llm.get_model("mistral-large").prompt("hi").text()
    message = str(info.value)
    assert "Bad key [key]" in message  # decoded, then redacted: neither the key nor its escapes are shown
    assert SENTINEL_KEY[:8] not in message and json_escaped(SENTINEL_KEY[:2])[1:-1] not in message


@pytest.mark.parametrize("status", [401, 422])
@pytest.mark.parametrize("prefix", ["", "y" * 470, "y" * 490])
def test_an_error_body_with_the_key_json_escaped_never_shows_it(mock, key, status, prefix):
    body = '{"message": ' + json_escaped(f"{prefix}Invalid API key {SENTINEL_KEY}") + "}"
    mock.add_response(url=CHAT_URL, status_code=status, content=body.encode())
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi").text()
    assert SENTINEL_KEY[:8] not in str(info.value) and SENTINEL_KEY[:8] not in info.value.detail


@pytest.mark.parametrize("stream", [False, True])
def test_a_local_error_is_never_retried_and_never_shows_the_key(mock, key, stream):
    """httpx refusing our own request (an illegal header) is no network failure: one attempt, key redacted."""
    mock.add_exception(httpx.LocalProtocolError(f"Illegal header value b'Bearer {SENTINEL_KEY}\\t'"), is_reusable=True)
    with pytest.raises(MistralSuiteError, match="could not be sent.*not retried") as info:
        llm.get_model("mistral-large").prompt("hi", stream=stream).text()
    assert len(mock.get_requests()) == 1
    assert SENTINEL_KEY not in str(info.value) and "network failure" in str(info.value)


class SilentServer:
    """Accepts connections and reads requests, but never answers; counts the connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.connections: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_that_never_answers_gets_one_retry_then_a_clear_error(key, monkeypatch, stream):
    from _llm_mistral_suite import transport

    server = SilentServer()
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", server.url)
    monkeypatch.setenv("LLM_MISTRAL_TIMEOUT", "0.5")
    monkeypatch.setattr(transport, "_sync_client", None)  # a client with this timeout
    started = time.monotonic()
    try:
        with pytest.raises(MistralSuiteError) as info:
            llm.get_model("mistral-large").prompt("hi", stream=stream).text()
    finally:
        server.close()
        monkeypatch.setattr(transport, "_sync_client", None)
    assert len(server.connections) == 2  # the default is 5 attempts: a read timeout gets one retry only
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "did not answer within 0.5 s after 2 attempts" in message and "LLM_MISTRAL_TIMEOUT=600" in message


def test_a_read_timeout_through_the_cli_is_one_clear_error(run_llm, llm_env):
    server = SilentServer()
    try:
        result = run_llm("-m", "mistral-small", "hi", env={**llm_env, "LLM_MISTRAL_BASE_URL": server.url,
                                                          "LLM_MISTRAL_KEY": SENTINEL_KEY, "LLM_MISTRAL_TIMEOUT": "1"})
    finally:
        server.close()
    assert_cli_error(result, "did not answer within 1 s", "LLM_MISTRAL_TIMEOUT")
    assert len(server.connections) == 2


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_says_so(mock, key, status, stream):
    mock.add_response(url=CHAT_URL, status_code=status, headers={"Location": "https://api.example.net/v1/chat"},
                      text="<html>moved</html>")
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi", stream=stream).text()
    message = str(info.value)
    assert f"redirect ({status}) to https://api.example.net/v1/chat" in message and "not JSON" not in message
    assert len(mock.get_requests()) == 1  # never followed: the key must not go elsewhere


def test_a_redirect_through_the_cli(fake, run_llm):
    fake.queue(RawReply(301, b"", {"Location": "https://elsewhere.example/v1/chat/completions"}))
    assert_cli_error(run_llm("-m", "mistral-small", "hi"), "redirect (301)", "elsewhere.example")
