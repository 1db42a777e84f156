"""When a failed request is worth another attempt and how long to wait first (no I/O: shared by sync and async)."""

from __future__ import annotations

import datetime
import random
import threading
import time
from typing import Any, Iterator, Mapping, NoReturn

from .errors import MistralSuiteError, StreamCutError, redact, service_message
from .settings import Endpoint, backoff_base, connect_timeout, max_attempts, shown_url, timeout_seconds

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0  # seconds; a longer wait is reported instead of slept through


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``Retry-After`` if given, else full-jitter backoff."""
    if retry_after is not None:
        return retry_after
    return random.uniform(0, min(30.0, backoff_base() * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def http_error(endpoint: Endpoint, status: int, body: bytes, attempts: int, key: str | None,
               location: str | None = None) -> MistralSuiteError:
    """One clear error for an HTTP failure status (or a redirect, which is never followed)."""
    detail = service_message(body, key)
    suffix = f": {detail}" if detail else ""
    if 300 <= status < 400:
        to = f" to {shown_url(location)}" if location else ""
        message = (
            f"{endpoint.label} answered with a redirect ({status}){to} instead of an answer. Redirects are not "
            f"followed (the key must not go elsewhere): check the URL {endpoint.shown_url} and use the address "
            "it moved to (https:// instead of http://?)."
        )
        detail = ""
    elif status == 401:
        message = f"{endpoint.label} rejected the API key (401 Unauthorized){suffix}. {endpoint.key_hint}".strip()
    elif status == 403:
        message = f"{endpoint.label} refused the request (403 Forbidden){suffix}. Your plan may not include this."
    elif status == 404:
        message = (
            f"{endpoint.label} answered 404 Not Found{suffix}. The model may be retired or misspelled: "
            "`llm mistral refresh` updates the model list and `llm mistral models` shows it."
        )
    elif status in RETRYABLE_STATUSES:
        what = "rate limit (429)" if status == 429 else f"server error ({status})"
        message = f"{endpoint.label} kept answering with a {what} after {attempts} attempts{suffix}. Try again later."
    else:
        message = f"{endpoint.label} rejected the request ({status}){suffix}"
    return MistralSuiteError(redact(message, key), status=status, detail=detail)


def connection_error(endpoint: Endpoint, exc: Exception, attempts: int, key: str | None = None) -> MistralSuiteError:
    """One clear error for a connection that failed, timed out or dropped."""
    import httpx

    tries = f" after {attempts} attempts" if attempts > 1 else ""
    reason = redact(str(exc) or type(exc).__name__, key)
    if isinstance(exc, httpx.ConnectTimeout):
        what = f"could not be reached at {endpoint.shown_url} within {connect_timeout():g} s{tries}"
    elif isinstance(exc, httpx.TimeoutException):
        return MistralSuiteError(
            f"{endpoint.label} did not answer within {timeout_seconds():g} s{tries}. If it is only slow (a long "
            f"reply, a model still loading), allow it more time: LLM_MISTRAL_TIMEOUT=600 (seconds)."
        )
    elif isinstance(exc, httpx.ConnectError):
        what = f"is not reachable at {endpoint.shown_url} ({reason}){tries}"
    else:
        what = f"dropped the connection ({reason}){tries}"
    return MistralSuiteError(f"{endpoint.label} {what}. {endpoint.start_hint}".strip())


def local_error(endpoint: Endpoint, exc: Exception, key: str | None) -> MistralSuiteError:
    """The request could not even be sent (an illegal header, an unusable URL): a mistake here, not the network's."""
    reason = redact(str(exc) or type(exc).__name__, key)
    return MistralSuiteError(
        f"The request to {endpoint.label} could not be sent ({reason}); this is not a network failure, so it was "
        f"not retried. Check its URL ({endpoint.shown_url}) and key."
    )


def stream_cut_error(endpoint: Endpoint, exc: Exception) -> MistralSuiteError:
    """The error for a connection lost after the reply began: never retried (the text so far was shown)."""
    return StreamCutError(
        f"{endpoint.label} dropped the connection in the middle of the reply ({exc or type(exc).__name__}); "
        "the text so far is incomplete. Try again."
    )


class RetryLater(Exception):
    """This attempt failed in a way worth retrying after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay


class Attempts:
    """The attempts of one request: iterate to get attempt numbers; after a failure, ``check_status`` or
    ``check_transport_error`` raises ``RetryLater`` (with the wait) or the error that ends the request."""

    def __init__(self, endpoint: Endpoint, key: str | None) -> None:
        self.endpoint, self.key = endpoint, key
        self.limit = max_attempts()
        self.number = 0
        self.timeouts = 0  # read timeouts: a server that never answers gets one more chance, not five

    def __iter__(self) -> Iterator[int]:
        for self.number in range(1, self.limit + 1):
            yield self.number

    def check_status(self, status: int, headers: Mapping[str, str], body: bytes) -> NoReturn:
        """Raise for a failure status or a redirect (call only when ``status >= 300``)."""
        error = http_error(self.endpoint, status, body, self.number, self.key, headers.get("location"))
        if status not in RETRYABLE_STATUSES:
            raise error
        self._retry_or_fail(error, parse_retry_after(headers.get("retry-after")))

    def check_transport_error(self, exc: Exception) -> NoReturn:
        """Raise for a failure before any of the reply arrived: a local one at once, a read timeout after
        one retry, a connection failure when the attempts run out (or at once for a local server not started)."""
        import httpx

        if isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL)):
            raise local_error(self.endpoint, exc, self.key)
        error = connection_error(self.endpoint, exc, self.number, self.key)
        if isinstance(exc, httpx.ConnectError) and not self.endpoint.retry_refused:
            raise error
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            self.timeouts += 1
            if self.timeouts > 1:
                raise error
        self._retry_or_fail(error, None)

    def _retry_or_fail(self, error: MistralSuiteError, retry_after: float | None) -> NoReturn:
        if self.number >= self.limit:
            raise error
        delay = backoff_delay(self.number, retry_after)
        if delay > MAX_RETRY_AFTER:
            raise MistralSuiteError(f"{error.message} The server asked to wait {delay:.0f} s before retrying.")
        raise RetryLater(delay)


class Pace:
    """Shared by the concurrent workers of one job (an embedding batch), so that a 429 slows them all.

    Every worker waits out ``Retry-After``, and the number of requests in flight halves (it grows back
    by one per success). A short ``Retry-After`` also teaches a least gap between request starts: the
    time from the start of the last request that succeeded to the moment the server allows the next.
    Without it, requests released together after a wait meet the limit again together, every time,
    until one runs out of attempts (a free-tier account allows about one request a second). The gap
    halves after every ``ceiling`` successes in a row, so a passing 429 costs a few slow requests, not
    the rest of the job; a long ``Retry-After`` (a per-minute quota) is waited out, not made a gap.
    Use it as a context manager around each request: leaving it with an exception counts as a failure.
    """

    MAX_GAP = 5.0  # seconds

    def __init__(self, limit: int) -> None:
        self.limit = self.ceiling = max(1, limit)
        self.active = 0
        self.not_before = 0.0
        self.gap = 0.0
        self.streak = 0  # successes since the last 429
        self.last_start = float("-inf")  # of any request
        self.last_ok: float | None = None  # start of the latest request that succeeded
        self.mine = threading.local()  # this thread's current request start
        self.condition = threading.Condition()

    def __enter__(self) -> "Pace":
        with self.condition:
            while True:
                now = time.monotonic()
                wait = max(self.not_before, self.last_start + self.gap) - now
                if self.active < self.limit and wait <= 0:
                    break
                self.condition.wait(timeout=wait if wait > 0 else None)
            self.active += 1
            self.last_start = self.mine.start = now
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self.condition:
            self.active -= 1
            if exc_info[0] is None:
                self.last_ok = max(self.last_ok or self.mine.start, self.mine.start)
                self.streak += 1
                if self.gap and self.streak >= self.ceiling:
                    self.streak, self.gap = 0, (self.gap / 2 if self.gap > 0.02 else 0.0)
                if self.limit < self.ceiling:
                    self.limit += 1
            self.condition.notify_all()

    def slow_down(self, delay: float) -> None:
        """After a 429 (or another retried failure): hold every worker back for ``delay`` seconds."""
        with self.condition:
            start = getattr(self.mine, "start", time.monotonic())
            allowed = start + delay  # Retry-After counts from when the server saw the request
            since = self.last_ok if self.last_ok is not None and self.last_ok <= start else start
            if allowed - since <= self.MAX_GAP:
                self.gap = max(self.gap, (allowed - since) * 1.05)
            self.streak = 0
            self.not_before = max(self.not_before, time.monotonic() + delay)
            self.limit = max(1, self.limit // 2)
            self.condition.notify_all()
