"""OpenAI-compatible HTTP backend: vLLM, SGLang, llama.cpp's ``llama-server``,
llama-cpp-python's server, and hosted APIs (Hyperbolic).

    backend = OpenAIHTTPBackend(["http://127.0.0.1:8001"], name="1B", server="vllm",
                                model_id="meta-llama/Llama-3.2-1B-Instruct", tokenizer_family="llama3")

The KV cache lives on the server: every request sends the whole context and the
server re-uses the longest prefix it still holds (vLLM prefix caching,
llama.cpp ``cache_prompt``). One request asks for up to ``max_tokens`` tokens;
only when a per-token policy reads statistics (``stop_before`` given) does it
also ask for their top-N log-probabilities (N = ``top_logprobs``; the
statistics' ``n_support`` is the number actually used, never more than N). The
policy is then asked token by token over the reply, and the reply is cut at the
first token where it fires, so there is never one request per token.

EOS never reaches ``Chunk.tokens``: the ids that end a generation are the
alias's ``eos_token_ids``, those the server names (llama-server ``/props``,
vLLM ``/tokenizer_info`` where enabled), and those a reply shows: we send no
stop strings, so a vLLM reply that finished "stop" ended at an EOS, the last of
its ``token_ids`` (``stop_reason`` is None for the tokenizer's EOS and the id
itself for a generation-config EOS such as Llama 3's 128008).

Server kinds (``server=``; ``"auto"`` asks ``/v1/models`` who owns the model):

  kind               prompt     token ids of the reply             tokenizer endpoints
  vllm (SGLang)      ids        ``return_token_ids`` / "token_id:N" POST /tokenize, /detokenize
  llama.cpp          ids        native ``/completion``, ``tokens``  POST /tokenize, /detokenize
  llama-cpp-python   text       the reply text, re-tokenized        POST /extras/tokenize, /extras/detokenize
  openai             text       none: a text-only backend           none

``tokenizer=`` (a catalogue name or ``.gguf`` path) makes tokenize/detokenize
local and exact (llama.cpp vocabulary only, no weights) whatever the server.
docs/serving.md says what each kind gives up.

Replicas: several base URLs are used round-robin for new sequences; a sequence
keeps going to the replica that holds its prefix. A replica that fails
(connection error or 5xx after the retries) is skipped for ``down_s`` seconds;
a request fails only when every replica failed, naming each host:port.
The API key (from the environment variable ``api_key_env``) is sent as a
Bearer header and appears in no message, log or repr.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import ConfigError, SamplingConfig
from ..stats import StepStats, stats_from_top_logprobs
from .gguf_vocab import GGUFVocab
from .http_transport import HTTPSettings, PrefixMemo, Replicas
from .protocol import BackendError, Chunk

__all__ = ["HTTPSettings", "OpenAIHTTPBackend", "KINDS"]

KINDS = ("auto", "vllm", "llama.cpp", "llama-cpp-python", "openai")
OWNERS = {"vllm": "vllm", "sglang": "vllm", "llamacpp": "llama.cpp", "me": "llama-cpp-python"}


# --- what a reply says, whatever the server ----------------------------------------


@dataclass
class Step:
    """One generated token as the server reported it."""

    token: int | None  # None where the server gives text only
    piece: str  # its text ("" when unknown)
    top: list[float] | None  # top-N log-probabilities of its distribution, None if not reported
    is_eos: bool = False


@dataclass
class Reply:
    steps: list[Step] = field(default_factory=list)
    text: str = ""  # the whole reply's text (EOS excluded)
    eos: bool = False
    n_tokens: int | None = None  # generated tokens as the server counts them (usage)
    prefill_tokens: int = 0
    prefill_s: float | None = None  # server-side, where reported


# --- the backend -------------------------------------------------------------------


class OpenAIHTTPBackend:
    concurrent = True  # the server batches; one backend serves many threads

    def __init__(self, urls: list[str] | str, *, name: str, model_id: str | None = None, server: str = "auto",
                 tokenizer_family: str | None = None, tokenizer: str | None = None,
                 chat_template: str | None = None, bos_text: str | None = None, eos_text: str | None = None,
                 eos_token_ids: list[int] | tuple[int, ...] = (), api_key_env: str | None = None,
                 settings: HTTPSettings | None = None, collect_stats: bool = True, sha256: str | None = None):
        if server not in KINDS:
            raise ConfigError(f"server must be one of {', '.join(KINDS)}, got {server!r}")
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise BackendError(f"model {name!r}: environment variable {api_key_env} (its API key) is not set")
        self.name = name
        self.settings = settings or HTTPSettings()
        self.replicas = Replicas([urls] if isinstance(urls, str) else list(urls), label=name,
                                 settings=self.settings, api_key=api_key)
        self.collect_stats = collect_stats
        self.sha256 = sha256
        self.eos_token_ids = frozenset(eos_token_ids)
        self._served_model = model_id  # the "model" field of requests
        self.server = server if server != "auto" else self._detect()
        self.model_id = model_id or self._served_model or self.replicas.urls[0]
        self.token_ids = self.server != "openai"
        self.has_stats = self.settings.top_logprobs > 0
        self._local = GGUFVocab(tokenizer) if tokenizer else None
        self._bos_id: list[int] | None = None  # llama-cpp-python: what /extras/tokenize adds for BOS
        self._texts = PrefixMemo()  # llama-cpp-python: token ids -> the text they were made from
        props = self._props()
        self.chat_template = chat_template if chat_template is not None else props.get("chat_template")
        self.bos_text = bos_text if bos_text is not None else props.get("bos_text", "")
        self.eos_text = eos_text if eos_text is not None else props.get("eos_text", "")
        self.tokenizer_key = tokenizer_family or f"{self.server}:{self.model_id}"
        if self.token_ids:
            self.eos_token_ids |= self._server_eos_ids(props)

    def __repr__(self) -> str:
        return f"OpenAIHTTPBackend({self.name!r}, server={self.server!r}, model_id={self.model_id!r}, urls={self.replicas.urls})"

    # --- discovery
    def _detect(self) -> str:
        """Ask /v1/models who serves the model (vLLM says "vllm", llama-server "llamacpp",
        llama-cpp-python "me"); anything else is treated as a text-only OpenAI API."""
        reply, _ = self.replicas.request("GET", "/v1/models")
        data = reply.get("data") or [{}]
        if self._served_model is None and data[0].get("id"):
            self._served_model = data[0]["id"]
        return OWNERS.get(str(data[0].get("owned_by", "")).lower(), "openai")

    def _props(self) -> dict:
        """Chat template and special-token texts, where the server or a local tokenizer tells."""
        if self._local is not None:
            return self._local.props()
        if self.server == "llama.cpp":
            reply, _ = self.replicas.request("GET", "/props")
            return {"chat_template": reply.get("chat_template") or None, "bos_text": reply.get("bos_token", ""),
                    "eos_text": reply.get("eos_token", "")}
        if self.server == "vllm":
            try:  # only where vLLM runs with --enable-tokenizer-info-endpoint
                reply, _ = self.replicas.request("GET", "/tokenizer_info")
            except BackendError:
                return {}
            eos = reply.get("eos_token")
            return {"eos_text": (eos.get("content", "") if isinstance(eos, dict) else eos) or ""}
        return {}

    def _server_eos_ids(self, props: dict) -> frozenset[int]:
        """Ids of the EOS text the server (or the local tokenizer) names: one token, or nothing."""
        text = props.get("eos_text") or ""
        if not text:
            return frozenset()
        ids = self._local.tokenize(text, special=True) if self._local is not None else \
            self._tokenize(text, add_bos=False, special=True)
        return frozenset(ids) if len(ids) == 1 else frozenset()

    # --- Backend protocol: tokenizer
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        if not self.token_ids:
            if text == "":
                return []  # no tokenizer: chat templates keep their BOS text as written
            raise BackendError(f"backend {self.name!r} is text-only (server kind {self.server!r}): no tokenizer")
        ids = self._tokenize(text, add_bos=add_bos, special=special)
        if self.server == "llama-cpp-python" and special:
            self._texts.put(ids, text)  # the server adds BOS to text prompts itself
        return ids

    def _tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        if self._local is not None:
            return self._local.tokenize(text, add_bos=add_bos, special=special)
        if self.server == "vllm":
            reply, _ = self.replicas.request("POST", "/tokenize", {"model": self._served_model, "prompt": text,
                                                                   "add_special_tokens": add_bos})
            return list(reply["tokens"])
        if self.server == "llama.cpp":
            reply, _ = self.replicas.request("POST", "/tokenize", {"content": text, "add_special": add_bos,
                                                                   "parse_special": special})
            return list(reply["tokens"])
        # llama-cpp-python: /extras/tokenize always parses special text and adds BOS when the model does.
        if self._bos_id is None:
            self._bos_id = list(self.replicas.request("POST", "/extras/tokenize", {"input": ""})[0]["tokens"])
        if text == "":
            return list(self._bos_id) if add_bos else []
        ids = list(self.replicas.request("POST", "/extras/tokenize", {"input": text})[0]["tokens"])
        if not add_bos and self._bos_id and ids[: len(self._bos_id)] == self._bos_id:
            ids = ids[len(self._bos_id):]
        return ids

    def detokenize(self, ids: list[int]) -> bytes:
        if not ids:
            return b""
        if self._local is not None:
            return self._local.detokenize(ids)
        if not self.token_ids:
            raise BackendError(f"backend {self.name!r} is text-only (server kind {self.server!r}): no tokenizer")
        if self.server == "vllm":
            reply, _ = self.replicas.request("POST", "/detokenize", {"model": self._served_model, "tokens": list(ids)})
            return reply["prompt"].encode("utf-8")
        if self.server == "llama.cpp":
            reply, _ = self.replicas.request("POST", "/detokenize", {"tokens": list(ids)})
            return reply["content"].encode("utf-8")
        reply, _ = self.replicas.request("POST", "/extras/detokenize", {"tokens": list(ids)})
        return reply["text"].encode("utf-8")

    def _context_text(self, context: list[int]) -> str:
        """The text a text-prompt server is sent for ``context``: the text this backend
        tokenized or generated for its longest known prefix, plus the rest detokenized.
        (Detokenizing the whole would drop control tokens such as <|im_start|>.)"""
        n, text = self._texts.longest_prefix(context)
        if n == len(context):
            return text
        rest = context[n:]
        if self._local is not None:
            tail = self._local.detokenize(rest, special=n == 0)
        else:
            tail = self.detokenize(rest)
        return text + tail.decode("utf-8", "replace")

    # --- Backend protocol: generate
    def generate(self, context: list[int] | str, max_tokens: int, sampling: SamplingConfig,
                 rng: np.random.Generator, stop_before: Callable[[StepStats], bool] | None = None,
                 position: int = 0) -> Chunk:
        if not context:
            raise BackendError(f"backend {self.name!r}: empty context")
        if stop_before is not None and not self.has_stats:
            raise BackendError(f"backend {self.name!r}: a per-token policy needs per-token statistics, "
                               f"which this backend does not provide (top_logprobs = 0)")
        # Top-N log-probabilities are asked for only when a per-token policy reads them:
        # nothing else uses a chunk's statistics, and they cost the server time and bytes.
        want_probs = self.has_stats and stop_before is not None
        seed = None if sampling.greedy else int(rng.integers(2**31 - 1))
        t = time.perf_counter()
        reply, replica = self._complete(context, max_tokens, sampling, seed, want_probs)
        wall = time.perf_counter() - t
        chunk = self._chunk(reply, context, max_tokens, stop_before, position)
        chunk.prefill_tokens = reply.prefill_tokens
        chunk.prefill_s = min(reply.prefill_s if reply.prefill_s is not None else 0.0, wall)
        chunk.decode_s = wall - chunk.prefill_s
        if self.token_ids:
            self.replicas.remember(list(context) + chunk.tokens, replica)
            if self.server == "llama-cpp-python":
                text = self._context_text(context) + self.detokenize(chunk.tokens).decode("utf-8", "replace")
                self._texts.put(list(context) + chunk.tokens, text)
        else:
            self.replicas.remember(context + (chunk.text or ""), replica)
        return chunk

    def _chunk(self, reply: Reply, context, max_tokens: int, stop_before, position: int) -> Chunk:
        """Apply ``stop_before`` over the reply's tokens and build the Chunk (protocol steps 3-4)."""
        steps = reply.steps
        stats = [stats_from_top_logprobs(s.top, position + i) if s.top else None for i, s in enumerate(steps)]
        cut, stopped = len(steps), False
        if stop_before is not None:
            for i, st in enumerate(stats):
                if st is not None and stop_before(st):  # a token the server gave no distribution for is not asked
                    cut, stopped = i, True
                    break
        eos = reply.eos and not stopped
        kept = [i for i in range(cut) if not steps[i].is_eos][:max_tokens]
        for j, i in enumerate(kept):  # an EOS the reply did not flag still ends the chunk, unreturned
            if steps[i].token is not None and steps[i].token in self.eos_token_ids:
                kept, eos, stopped = kept[:j], True, False
                break
        chunk = Chunk(eos=eos, stopped=stopped)
        if not self.token_ids:
            chunk.text = reply.text if cut == len(steps) else "".join(steps[i].piece for i in kept)
            # without logprobs there are no steps: the server's own count
            chunk.decode_tokens = len(kept) if steps else min(reply.n_tokens or 0, max_tokens)
            return chunk
        if steps and all(s.token is not None for s in steps):
            chunk.tokens = [steps[i].token for i in kept]
            chunk.stats = [stats[i] for i in kept]
        else:  # text-prompt server: the ids are the tokenization of the text
            text = reply.text if cut == len(steps) else "".join(steps[i].piece for i in kept)
            chunk.tokens = self.tokenize(text, special=False)[:max_tokens] if text else []
            chunk.stats = [stats[i] if i < len(stats) else None for i in range(len(chunk.tokens))]
        chunk.decode_tokens = len(chunk.tokens)
        return chunk

    def _complete(self, context, max_tokens: int, sampling: SamplingConfig, seed: int | None,
                  want_probs: bool) -> tuple[Reply, int]:
        n = self.settings.top_logprobs if want_probs else 0
        if self.server == "llama.cpp":
            return self._complete_llama_server(context, max_tokens, sampling, seed, n)
        body = {"max_tokens": max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p}
        if self._served_model:
            body["model"] = self._served_model
        if seed is not None:
            body["seed"] = seed
        if self.server == "vllm":
            body.update(prompt=list(context), logprobs=n, return_tokens_as_token_ids=True, return_token_ids=True)
        else:
            body["prompt"] = context if isinstance(context, str) else self._context_text(context)
            if n:
                body["logprobs"] = n
            if self.server == "llama-cpp-python":  # its sampler defaults are not neutral
                body.update(top_k=0, min_p=0.0, repeat_penalty=1.0)
        reply, replica = self.replicas.request("POST", "/v1/completions", body, key=context)
        return self._parse_openai(reply, n), replica

    def _parse_openai(self, reply: dict, n_top: int) -> Reply:
        try:
            choice = reply["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"backend {self.name!r}: reply has no choices: {self.replicas.line(reply)}") from None
        lp = choice.get("logprobs") or {}
        pieces = lp.get("tokens") or []
        # vLLM (and OpenAI) add the sampled token to its top-N when it is not among them: N + 1 entries.
        tops = [_top_n(t, n_top) for t in lp.get("top_logprobs") or []] if n_top else []
        ids = choice.get("token_ids")
        if ids is None and pieces and all(isinstance(p, str) and p.startswith("token_id:") for p in pieces):
            ids = [int(p.split(":", 1)[1]) for p in pieces]
        if self.server == "vllm" and ids is None:
            raise BackendError(f"backend {self.name!r}: the server returned no token ids "
                               f"(a vLLM that knows return_tokens_as_token_ids is needed)")
        usage = reply.get("usage") or {}
        out = Reply(text=choice.get("text") or "", n_tokens=usage.get("completion_tokens"))
        # We send no stop strings or stop ids, so "stop" is an EOS: the tokenizer's (stop_reason None)
        # or one vLLM took from the model's generation config (stop_reason: that token id).
        stop_reason = choice.get("stop_reason")
        out.eos = choice.get("finish_reason") == "stop" and (stop_reason is None or isinstance(stop_reason, int))
        cached = ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
        out.prefill_tokens = max(0, int(usage.get("prompt_tokens") or 0) - int(cached))
        n = len(ids) if ids is not None else len(pieces)
        for i in range(n):
            piece = pieces[i] if i < len(pieces) and not (ids is not None and self.server == "vllm") else ""
            out.steps.append(Step(ids[i] if ids is not None else None, piece, tops[i] if i < len(tops) else None))
        last = out.steps[-1] if out.steps else None
        if out.eos and last is not None and last.token is not None:
            # vLLM returns the token it stopped at as the last of token_ids (its text is not in "text").
            if self.server == "vllm" or last.token in self.eos_token_ids or last.token == stop_reason:
                last.is_eos = True
                self.eos_token_ids |= {last.token}  # learnt: the same id ends later replies, whatever they say
        return out

    def _complete_llama_server(self, context, max_tokens, sampling, seed, n) -> tuple[Reply, int]:
        """llama-server's native /completion: prompt ids in, generated ids and per-token
        top-N (with ids) out; its OpenAI route drops token ids."""
        body = {"prompt": list(context), "n_predict": max_tokens, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "n_probs": n,
                "return_tokens": True, "cache_prompt": True}
        if seed is not None:
            body["seed"] = seed
        reply, replica = self.replicas.request("POST", "/completion", body, key=context)
        tokens = reply.get("tokens")
        if tokens is None:
            raise BackendError(f"backend {self.name!r}: llama-server returned no token ids (too old?)")
        probs = reply.get("completion_probabilities") or []
        out = Reply(text=reply.get("content", ""), eos=reply.get("stop_type") == "eos")
        timings = reply.get("timings") or {}
        out.prefill_tokens = int(timings.get("prompt_n", reply.get("tokens_evaluated", 0)) or 0)
        if "prompt_ms" in timings:
            out.prefill_s = float(timings["prompt_ms"]) / 1000.0
        j = 0
        for tok in tokens:
            top = None
            # A token that ends inside a UTF-8 character has no entry: its text is sent with the next.
            if j < len(probs) and probs[j].get("id") == tok:
                top = _top_n([c["logprob"] for c in probs[j].get("top_logprobs", [])], n)
                j += 1
            out.steps.append(Step(tok, "", top))
        if out.eos and out.steps:
            out.steps[-1].is_eos = True  # llama-server returns the EOG token itself
        return out, replica

    def close(self) -> None:
        self.replicas.close()


def _top_n(top: dict | list | None, n: int) -> list[float] | None:
    """The ``n`` largest log-probabilities of one step's top list (None: not reported)."""
    if not top or n <= 0:
        return None
    values = sorted((float(v) for v in (top.values() if isinstance(top, dict) else top)), reverse=True)
    return values[:n]
