"""HTTP transport shared by the HTTP backends: settings, replicas, retries, errors.

``Replicas`` holds one ``httpx.Client`` (a thread-safe connection pool) over one
or more base URLs. New sequences go round-robin; a sequence keeps going to the
replica that served its longest prefix (so the server's prefix cache is hit).

One request is tried in rounds, failing over first and retrying second:
  - each round tries every replica still in play once, in order, and the first
    good reply wins;
  - connection errors, 5xx, 429 (rate limited) and 408 (request timeout) keep a
    replica in play: the next round comes after ``backoff_s * 2**round`` seconds,
    or after the server's ``Retry-After`` (seconds or an HTTP date) where it is
    longer, capped at ``retry_after_max_s``; there are ``retries`` more rounds;
  - a timeout takes the replica out of play for this request (the next replica
    is asked at once, never the same stuck one ``retries`` more times);
  - any other 4xx takes the replica out of play too: another replica may serve
    the request (one with the wrong model, or a bad key), and a request that every
    replica refuses (it is itself bad) fails at once, with no retries.
A replica that failed is skipped for ``down_s`` seconds for new sequences (still
tried last). Every error is one line naming host:port, and the API key is
scrubbed from it, the server's echoed reply text included: the key appears in no
message, log or repr.
"""
from __future__ import annotations

import email.utils
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ..config import ConfigError
from .protocol import BackendError

RETRY_STATUS = (408, 429)  # 4xx that say "later", not "never"


@dataclass(frozen=True)
class HTTPSettings:
    """Timeouts and retry policy for one backend (all replicas)."""

    timeout_s: float = 300.0  # one whole request (a long generation on a busy server)
    connect_timeout_s: float = 5.0
    retries: int = 3  # rounds over the replicas after the first, on connection errors, 5xx, 408, 429
    backoff_s: float = 0.5  # before round i: backoff_s * 2**(i-1), or the server's Retry-After if longer
    retry_after_max_s: float = 60.0  # a longer Retry-After is waited this long
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
        for name in ("backoff_s", "down_s", "retry_after_max_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")


# --- transport: replicas, retries, errors -----------------------------------------


def hostport(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: a number of seconds or an HTTP
    date (RFC 9110); None when absent or unreadable, 0 for a date in the past."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable


@dataclass
class _Outcome:
    """How one try at one replica ended, when it did not give a reply."""

    kind: str  # "retry" (try again later), "timeout" or "refused" (out of play for this request)
    reason: str  # one line, scrubbed
    wait_s: float | None = None  # the server's Retry-After


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
        self.sleep = time.sleep  # tests may record the waits instead

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

    def _mark_down(self, i: int, seconds: float) -> None:
        self._down_until[i] = max(self._down_until[i], time.monotonic() + seconds)

    # -- requests
    def request(self, method: str, path: str, body: dict | None = None, *, key=None) -> tuple[dict, int]:
        """JSON reply and the replica index that gave it. Raises BackendError, one line."""
        s = self.settings
        in_play = self._order(key)
        last: dict[int, _Outcome] = {}
        tries = 0
        for round_ in range(s.retries + 1):
            if round_:
                asked = max((o.wait_s for j, o in last.items() if j in in_play and o.wait_s is not None), default=0.0)
                self.sleep(max(s.backoff_s * 2 ** (round_ - 1), min(asked, s.retry_after_max_s)))
            for i in list(in_play):
                tries += 1
                outcome = self._try(i, method, path, body)
                if not isinstance(outcome, _Outcome):
                    for j, o in last.items():  # another replica served it: those that refused are bad replicas
                        if o.kind == "refused":
                            self._mark_down(j, s.down_s)
                    return outcome, i
                last[i] = outcome
                if outcome.kind == "retry":
                    self._mark_down(i, s.down_s if outcome.wait_s is None else min(outcome.wait_s, s.down_s))
                else:
                    in_play.remove(i)
                    if outcome.kind == "timeout":
                        self._mark_down(i, s.down_s)
            if not in_play:
                break
        raise BackendError(self._failure(path, last, tries))

    def _failure(self, path: str, last: dict[int, _Outcome], tries: int) -> str:
        """The one-line error once no replica gave a reply."""
        who = f"model {self.label!r}"
        refusals = {o.reason for o in last.values() if o.kind == "refused"}
        if len(refusals) == 1 and all(o.kind == "refused" for o in last.values()):
            hosts = ", ".join(hostport(self.urls[i]) for i in last)
            if len(self.urls) == 1:
                return f"{who}: server {hosts} refused {path}: {refusals.pop()}"
            return f"{who}: every replica ({hosts}) refused {path}: {refusals.pop()}"
        if len(self.urls) == 1:
            (i, o), = last.items()
            n = f"{tries} tries" if tries > 1 else "1 try"
            return f"{who}: server {hostport(self.urls[i])} failed after {n} ({o.reason})"
        failures = ", ".join(f"{hostport(self.urls[i])} ({o.reason})" for i, o in last.items())
        return f"{who}: all {len(self.urls)} replicas failed: {failures}"

    def _try(self, i: int, method: str, path: str, body: dict | None) -> dict | _Outcome:
        """One request to replica ``i``: its JSON reply, or how it failed. Raises
        BackendError only for a failure no other try can mend."""
        url = self.urls[i] + path
        try:
            r = self.client.request(method, url, json=body)
        except httpx.TimeoutException as e:
            return _Outcome("timeout", f"timed out after {self.settings.timeout_s:g} s ({type(e).__name__}); "
                                       f"a longer generation needs a larger timeout_s")
        except httpx.TransportError as e:
            return _Outcome("retry", self.line(_transport_reason(e)))
        if r.status_code < 400:
            try:
                return r.json()
            except ValueError:
                raise BackendError(f"model {self.label!r}: server {hostport(url)} sent a reply that is "
                                   f"not JSON: {self.line(r.text)}") from None
        message = self.line(_error_message(r))
        if "logits_all" in message:  # llama-cpp-python without --logits_all: retrying cannot help
            raise BackendError(f"model {self.label!r}: server {hostport(url)} cannot return logprobs: "
                               f"start it with --logits_all true, or set top_logprobs = 0 ({message})")
        reason = f"HTTP {r.status_code}: {message}"
        if r.status_code >= 500 or r.status_code in RETRY_STATUS:
            return _Outcome("retry", reason, retry_after_s(r.headers.get("Retry-After")))
        return _Outcome("refused", reason)

    def line(self, text) -> str:
        """``text`` on one line, shortened, with the API key removed (before shortening,
        so that no cut-off piece of the key survives)."""
        return one_line(self.scrub(str(text)))

    def scrub(self, text: str) -> str:
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
    """The server's own words for an error reply, whole (the caller scrubs, then shortens)."""
    try:
        body = r.json()
    except ValueError:
        return r.text.strip() or r.reason_phrase
    err = body.get("error", body.get("detail", body.get("message", body))) if isinstance(body, dict) else body
    if isinstance(err, dict):
        err = err.get("message", err)
    return str(err)


def _transport_reason(e: httpx.TransportError) -> str:
    if isinstance(e, httpx.ConnectError):
        text = str(e).lower()
        return "connection refused" if "refused" in text else f"cannot connect: {e}"
    return f"{type(e).__name__}: {e or 'connection lost'}"
