"""The OpenAI wire format of ``guided serve``: request bodies in, responses and chunks out.

Pure functions and frozen records, no model and no web framework, so every rule here is
testable on its own.

Requests. ``parse_request(kind, body, guided_fields)`` returns a ``ServeRequest`` or raises
``RequestError`` (HTTP 400) whose one-line message names the field and what is allowed.
  - OpenAI fields mean what they mean in the OpenAI API: ``max_tokens`` (or
    ``max_completion_tokens``) is ``max_new_tokens``; ``stop`` (a string or a list) replaces
    the server's stop strings; ``seed`` is the run seed; ``temperature`` and ``top_p`` apply
    to *both* models (the served "model" is the pair) unless the body also gives
    ``oracle_temperature`` / ``oracle_top_p``.
  - Guided fields: any ``GenerationConfig`` field name (``c``, ``k``, ``policy``,
    ``threshold``, ``p``, ``step_size``, ...), ``calibration`` (a file on the server), and
    ``seed_key`` (``guided eval`` seeds a problem's random streams with its id; give the
    same id here to reproduce a random policy's draw). Their values are checked by
    ``GenerationConfig`` itself, later, with the server's flags as defaults.
  - ``trace: true`` (or ``?trace=1``) returns the whole trace.
  - OpenAI fields this server cannot honour are refused unless they hold their default
    (``n`` 1, ``logprobs`` off, ``echo`` false, penalties 0, ...); unknown fields are refused
    (a typo in a guided parameter must not pass silently). Null means "not given".
Responses follow the OpenAI shapes; ``usage`` adds ``guided`` (``guided_usage``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..config import GuidedError

COMPLETION, CHAT = "completion", "chat"

# Accepted and ignored: they change nothing about the text.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prediction"})
# Accepted only at their default value (None is always accepted).
DEFAULT_ONLY = {
    "n": (1,), "best_of": (1,), "echo": (False,), "logprobs": (False, 0), "top_logprobs": (0,),
    "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "logit_bias": ({},), "suffix": ("",),
    "tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
    "response_format": ({"type": "text"},),
}
WHY_DEFAULT = "this server returns one choice of plain text without log-probabilities or penalties"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Request fields of guided serve that are not GenerationConfig fields.
EXTRA_GUIDED = ("calibration", "seed_key", "trace")


class RequestError(GuidedError):
    """A bad request (HTTP 400): one line naming the field (``param``) and what is allowed."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass(frozen=True)
class ServeRequest:
    kind: str  # COMPLETION | CHAT
    prompt: str | None = None  # completions: the raw prompt (no chat template)
    messages: tuple[dict, ...] = ()  # chat: {"role", "content"} with content a string
    model: str | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with usage
    trace: bool = False
    seed_key: str | None = None
    generation: dict = field(default_factory=dict)  # GenerationConfig field (or "calibration") -> value
    names: dict = field(default_factory=dict)  # GenerationConfig field -> the body's name for it (max_tokens)

    def logged(self) -> dict:
        """What the request log shows: the parameters, never the prompt."""
        return {"kind": self.kind, "stream": self.stream, "trace": self.trace, **self.generation,
                **({"seed_key": self.seed_key} if self.seed_key is not None else {})}


def parse_request(kind: str, body, guided_fields: frozenset[str], *, query_trace: bool = False) -> ServeRequest:
    """The request as a ``ServeRequest``; ``RequestError`` for a bad one (module docstring)."""
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    body = {k: v for k, v in body.items() if v is not None}  # null: not given
    gen: dict = {}
    names: dict = {}
    out: dict = {"kind": kind, "model": _typed(body, "model", str), "trace": query_trace}
    if kind == COMPLETION:
        out["prompt"] = _prompt(body.get("prompt"))
    else:
        out["messages"] = _messages(body.get("messages"))
    for name, value in body.items():
        if name in ("model", "prompt" if kind == COMPLETION else "messages") or name in IGNORED:
            continue
        if name == "stream":
            out["stream"] = _typed(body, name, bool)
        elif name == "stream_options":
            opts = _typed(body, name, dict)
            unknown = set(opts) - {"include_usage", "continuous_usage_stats"}
            if unknown:
                raise RequestError(f"stream_options may hold include_usage, got {sorted(unknown)[0]!r}", name)
            out["include_usage"] = bool(opts.get("include_usage", False))
        elif name == "trace":
            out["trace"] = _typed(body, name, bool) or query_trace
        elif name == "seed_key":
            out["seed_key"] = _typed(body, name, str)
        elif name in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
            if "max_new_tokens" in gen and gen["max_new_tokens"] != value:
                raise RequestError(f"{name} disagrees with another max-tokens field; give one of max_tokens, "
                                   f"max_completion_tokens, max_new_tokens", name)
            gen["max_new_tokens"] = value
            names["max_new_tokens"] = name
        elif name == "stop":
            gen["stop"] = _stop(value)
        elif name in DEFAULT_ONLY:
            if not any(value == d and type(value) is type(d) for d in DEFAULT_ONLY[name]):
                allowed = " or ".join(repr(v) for v in DEFAULT_ONLY[name])
                raise RequestError(f"{name} must be {allowed} ({WHY_DEFAULT}), got {value!r}", name)
        elif name in guided_fields or name == "calibration":
            gen[name] = value
        else:
            raise RequestError(f"unknown field {name!r}: not an OpenAI field this server accepts nor a guided "
                               f"parameter ({', '.join(sorted(guided_fields | {'calibration', 'seed_key'}))})", name)
    # The served model is the pair: temperature and top_p sample both unless the oracle's are given.
    for shared, oracle in (("temperature", "oracle_temperature"), ("top_p", "oracle_top_p")):
        if shared in gen and oracle not in gen and oracle in guided_fields:
            gen[oracle] = gen[shared]
    if out.get("include_usage") and not out.get("stream"):
        raise RequestError("stream_options is only allowed with stream: true", "stream_options")
    return ServeRequest(generation=gen, names=names, **out)


def _typed(body: dict, name: str, kind: type):
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise RequestError(f"{name} must be a {_NAMES[kind]}, got {value!r}", name)
    return value if value is not None else (False if kind is bool else None)


_NAMES = {str: "string", bool: "boolean (true or false)", dict: "JSON object"}


def _prompt(value) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        got = f"a list of {len(value)}" if isinstance(value, list) else repr(value)
        raise RequestError(f"prompt must be one string (or a list of one string): this server runs one prompt "
                           f"per request, got {got}", "prompt")
    if not value:
        raise RequestError("prompt must be a non-empty string, got ''", "prompt")
    return value


def _messages(value) -> tuple[dict, ...]:
    if not isinstance(value, list) or not value:
        raise RequestError(f"messages must be a non-empty list of {{role, content}} objects, got {value!r}", "messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise RequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}", "messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError(f"messages[{i}].content parts must be {{type: text, text: ...}} (text only)",
                                   "messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string, got {content!r}", "messages")
        out.append({"role": ROLES[m["role"]], "content": content})
    return tuple(out)


def _stop(value) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError(f"stop must be a non-empty string or a list of them, got {value!r}", "stop")
    return stops


# --- responses --------------------------------------------------------------------------

def finish_reason(trace_finish: str) -> str:
    """OpenAI's finish_reason: "stop" at an EOS or a stop string, "length" at the token
    limit or a full context."""
    return "stop" if trace_finish in ("eos", "stop") else "length"


def guided_usage(trace) -> dict:
    """``usage.guided``: the trace's counts under the trace's own field names (plus its
    ``cost`` record where the trace has one)."""
    d = trace.to_dict()
    out = {k: d[k] for k in ("base_tokens", "oracle_tokens", "oracle_share", "cheat_positions", "rejected_tokens",
                             "total_tokens_generated", "finish_reason", "handoff")}
    out["consults"] = len(trace.cheat_positions)
    out["generation_s"] = trace.timings.generation_s
    if d.get("cost") is not None:
        out["cost"] = d["cost"]
    return out


def usage(prompt_tokens: int, trace) -> dict:
    n = trace.total_tokens_generated
    return {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n,
            "guided": guided_usage(trace)}


def response(kind: str, rid: str, model: str, text: str, trace, prompt_tokens: int, *, with_trace: bool) -> dict:
    """The whole (non-streamed) completion or chat completion."""
    reason = finish_reason(trace.finish_reason)
    if kind == CHAT:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
    out = {"id": rid, "object": "chat.completion" if kind == CHAT else "text_completion", "created": int(time.time()),
           "model": model, "choices": [choice], "usage": usage(prompt_tokens, trace)}
    if with_trace:
        out["trace"] = trace.to_dict()
    return out


def chunk(kind: str, rid: str, model: str, created: int, *, text: str | None = None, role: bool = False,
          reason: str | None = None, include_usage: bool = False) -> dict:
    """One stream chunk: a piece of text, the role (chat's first chunk), or the finish."""
    if kind == CHAT:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
    out = {"id": rid, "object": "chat.completion.chunk" if kind == CHAT else "text_completion", "created": created,
           "model": model, "choices": [choice]}
    if include_usage:
        out["usage"] = None
    return out


def usage_chunk(kind: str, rid: str, model: str, created: int, prompt_tokens: int, trace) -> dict:
    """The last chunk with ``stream_options.include_usage``: no choices, the usage."""
    return {"id": rid, "object": "chat.completion.chunk" if kind == CHAT else "text_completion", "created": created,
            "model": model, "choices": [], "usage": usage(prompt_tokens, trace)}


def error_body(message: str, *, param: str | None = None, kind: str = "invalid_request_error",
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
