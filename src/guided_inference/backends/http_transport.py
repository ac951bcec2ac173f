"""HTTP transport shared by the HTTP backends: settings, replicas, retries, errors.

``Replicas`` holds one ``httpx.Client`` (a thread-safe connection pool) over one
or more base URLs. New sequences go round-robin; a sequence keeps going to the
replica that served its longest prefix (so the server's prefix cache is hit).
Connection errors, timeouts and 5xx are retried with exponential backoff, then
the replica is skipped for ``down_s`` seconds and the next one is tried; 4xx is
not retried. Every error is one line naming host:port, and the API key is
scrubbed from it: the key appears in no message, log or repr.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ..config import ConfigError
from .protocol import BackendError


@dataclass(frozen=True)
class HTTPSettings:
    """Timeouts and retry policy for one backend (all replicas)."""

    timeout_s: float = 300.0  # one whole request (a long generation on a busy server)
    connect_timeout_s: float = 5.0
    retries: int = 3  # per replica, after the first try, on connection errors and 5xx
    backoff_s: float = 0.5  # before retry i: backoff_s * 2**i
    down_s: float = 30.0  # a failed replica is skipped this long
    top_logprobs: int = 20  # N of the top-N log-probabilities per token; 0: no statistics

    def __post_init__(self) -> None:
        for name in ("timeout_s", "connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("retries", "top_logprobs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
        if self.backoff_s < 0 or self.down_s < 0:
            raise ConfigError(f"backoff_s and down_s must be >= 0, got {self.backoff_s!r}, {self.down_s!r}")


# --- transport: replicas, retries, errors -----------------------------------------


def hostport(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


class _Retryable(Exception):
    """A failure worth retrying (connection error, timeout, 5xx): ``str`` is the reason."""


class Replicas:
    """One shared ``httpx.Client`` (a connection pool, safe across threads) over the
    base URLs, with round-robin, prefix affinity, retries and down-marking."""

    def __init__(self, urls: list[str], *, label: str, settings: HTTPSettings, api_key: str | None = None):
        if not urls:
            raise ConfigError(f"model {label!r}: at least one base URL is required")
        for u in urls:
            if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).hostname:
                raise ConfigError(f"model {label!r}: base URL must look like http://host:port, got {u!r}")
        self.urls = [u.rstrip("/") for u in urls]
        self.label = label
        self.settings = settings
        self._secret = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self._lock = threading.Lock()
        self._next = 0
        self._down_until = [0.0] * len(self.urls)
        self._affinity = PrefixMemo()  # sequences served -> replica index
        self.sleep = time.sleep  # tests may speed this up

    def __repr__(self) -> str:  # never the key
        return f"Replicas({self.label!r}, {[hostport(u) for u in self.urls]})"

    # -- choosing a replica
    def _order(self, key: list | str | None) -> list[int]:
        now = time.monotonic()
        with self._lock:
            first = self._affine(key) if key is not None and len(self.urls) > 1 else None
            if first is None:
                first = self._next % len(self.urls)
                self._next += 1
        order = [(first + i) % len(self.urls) for i in range(len(self.urls))]
        up = [i for i in order if self._down_until[i] <= now]
        return up + [i for i in order if self._down_until[i] > now]  # down ones last, still tried

    def _affine(self, key) -> int | None:
        """The replica that served the longest remembered prefix of ``key``."""
        n, replica = self._affinity.longest_prefix(key, None)
        return replica if n else None

    def remember(self, sequence: list | str, replica: int) -> None:
        if len(self.urls) > 1:
            self._affinity.put(sequence, replica)

    # -- requests
    def request(self, method: str, path: str, body: dict | None = None, *, key=None) -> tuple[dict, int]:
        """JSON reply and the replica index that gave it. Raises BackendError, one line."""
        failures = []
        for i in self._order(key):
            try:
                return self._with_retries(i, method, path, body), i
            except _Retryable as e:
                self._down_until[i] = time.monotonic() + self.settings.down_s
                failures.append(f"{hostport(self.urls[i])} ({self._scrub(str(e))})")
        if len(self.urls) == 1:
            raise BackendError(f"model {self.label!r}: server {failures[0]} failed after "
                               f"{self.settings.retries + 1} tries")
        raise BackendError(f"model {self.label!r}: all {len(self.urls)} replicas failed: {', '.join(failures)}")

    def _with_retries(self, i: int, method: str, path: str, body: dict | None) -> dict:
        url = self.urls[i] + path
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            try:
                r = self.client.request(method, url, json=body)
            except httpx.TimeoutException as e:
                reason = f"timed out ({type(e).__name__})"
            except httpx.TransportError as e:
                reason = _transport_reason(e)
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError:
                        raise BackendError(f"model {self.label!r}: server {hostport(url)} sent a reply that is "
                                           f"not JSON: {self._scrub(one_line(r.text))}") from None
                message = self._scrub(_error_message(r))
                if r.status_code < 500:
                    raise BackendError(f"model {self.label!r}: server {hostport(url)} refused {path}: "
                                       f"HTTP {r.status_code}: {message}")
                if "logits_all" in message:  # llama-cpp-python without --logits_all: retrying cannot help
                    raise BackendError(f"model {self.label!r}: server {hostport(url)} cannot return logprobs: "
                                       f"start it with --logits_all true, or set top_logprobs = 0 ({message})")
                reason = f"HTTP {r.status_code}: {message}"
            if attempt == self.settings.retries:
                raise _Retryable(reason)
        raise AssertionError("unreachable")

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def close(self) -> None:
        self.client.close()


class PrefixMemo:
    """A bounded memo from token sequences to values, looked up by longest prefix."""

    def __init__(self, size: int = 256):
        self.size = size
        self._items: OrderedDict[tuple, tuple[int, object]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, seq: list, value) -> None:
        n = len(seq)
        key = (n, _frozen(seq[max(0, n - 8):]), hash(_frozen(seq)))
        with self._lock:
            self._items[key] = (n, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def longest_prefix(self, seq: list, default=""):
        """(length, value) of the longest remembered prefix of ``seq``; (0, default) if none."""
        best = (0, default)
        with self._lock:
            items = list(self._items.items())
        for (n, tail, h), (_, value) in items:
            if best[0] < n <= len(seq) and _frozen(seq[max(0, n - 8):n]) == tail and hash(_frozen(seq[:n])) == h:
                best = (n, value)
        return best


def _frozen(seq):
    return seq if isinstance(seq, str) else tuple(seq)


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return one_line(r.text) or r.reason_phrase
    err = body.get("error", body.get("detail", body.get("message", body))) if isinstance(body, dict) else body
    if isinstance(err, dict):
        err = err.get("message", err)
    return one_line(err)


def _transport_reason(e: httpx.TransportError) -> str:
    if isinstance(e, httpx.ConnectError):
        text = str(e).lower()
        return "connection refused" if "refused" in text else f"cannot connect: {one_line(e)}"
    return f"{type(e).__name__}: {one_line(e) or 'connection lost'}"
