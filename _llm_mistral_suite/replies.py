"""Sending a chat-shaped request and turning its reply into llm events: the ``execute`` of API, FIM and server models.

Sync and async share everything but the lines that await.
"""

from __future__ import annotations

from typing import (
    Any,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    NamedTuple,
    Optional,
    Union,
)

import llm
from llm.parts import StreamEvent

from .errors import MistralSuiteError
from .settings import Endpoint
from .transport import arequest_json, astream_chunks, request_json, stream_chunks
from .wire import ReplyDecoder


class ReplyRequest(NamedTuple):
    """Everything needed to send one prompt and read its reply."""

    endpoint: Endpoint
    path: str
    key: str | None
    body: dict[str, Any]
    requested_model: str  # the reply's own model name is logged when it differs
    explain: Optional[Callable[[MistralSuiteError], MistralSuiteError]] = None  # route-specific error wording


def run_reply(request: ReplyRequest, stream: bool, response: llm.Response) -> Iterator[Union[str, StreamEvent]]:
    """Send ``request`` (streamed or not) and yield its events."""
    endpoint, path, key, body = request.endpoint, request.path, request.key, request.body
    decoder = ReplyDecoder(endpoint.label)
    shown: set[str] = set()  # the kinds of output already yielded ("text", "reasoning")
    try:
        if stream:
            chunks: Iterable[dict[str, Any]] = stream_chunks(endpoint, path, key, body)
        else:
            chunks = (request_json(endpoint, "POST", path, key, body),)
        for event in decoder.events(chunks):
            shown.add(event.type if isinstance(event, StreamEvent) else "text")
            yield event
        yield from decoder.finish(response, request.requested_model)
    except MistralSuiteError as error:
        if stream:
            end_partial_output(shown)
        raise (request.explain(error) if request.explain else error) from None


async def arun_reply(
    request: ReplyRequest, stream: bool, response: llm.AsyncResponse
) -> AsyncIterator[Union[str, StreamEvent]]:
    """Async twin of ``run_reply``."""
    endpoint, path, key, body = request.endpoint, request.path, request.key, request.body
    decoder = ReplyDecoder(endpoint.label)
    shown: set[str] = set()
    try:
        if stream:
            async for chunk in astream_chunks(endpoint, path, key, body):
                for event in decoder.events((chunk,)):
                    shown.add(event.type if isinstance(event, StreamEvent) else "text")
                    yield event
        else:
            for event in decoder.events((await arequest_json(endpoint, "POST", path, key, body),)):
                shown.add(event.type if isinstance(event, StreamEvent) else "text")
                yield event
        for event in decoder.finish(response, request.requested_model):
            yield event
    except MistralSuiteError as error:
        if stream:
            end_partial_output(shown)
        raise (request.explain(error) if request.explain else error) from None


def end_partial_output(shown: set[str]) -> None:
    """After part of a reply was printed, start the error that follows on a line of its own: when reasoning went
    to stderr, or text to a stdout that is where stderr goes too (a terminal, one log file)."""
    import os
    import sys

    if not shown:
        return
    if "reasoning" not in shown:
        try:
            out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
        except (AttributeError, OSError, ValueError):  # no real file behind them (a notebook, a test runner)
            return
        if (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino):
            return
    sys.stdout.flush()
    sys.stderr.write("\n")
    sys.stderr.flush()


class ReplyModel:
    """``execute`` of a sync model whose ``reply_request(prompt, stream, key, conversation)`` says what to send
    (``conversation``: llm's, or None outside one)."""

    reply_request: Callable[[llm.Prompt, bool, Optional[str], Any], ReplyRequest]

    def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[no-untyped-def]
        yield from run_reply(self.reply_request(prompt, stream, key, conversation=conversation), stream, response)


class AsyncReplyModel:
    """``execute`` of an async model whose ``areply_request`` (by default ``reply_request``) says what to send."""

    reply_request: Callable[[llm.Prompt, bool, Optional[str], Any], ReplyRequest]

    async def areply_request(self, prompt: llm.Prompt, stream: bool, key: str | None, conversation: Any) -> ReplyRequest:
        return self.reply_request(prompt, stream, key, conversation=conversation)

    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[no-untyped-def]
        request = await self.areply_request(prompt, stream, key, conversation)
        async for event in arun_reply(request, stream, response):
            yield event
