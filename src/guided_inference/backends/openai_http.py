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
import threading
import time

import numpy as np

from ..config import ConfigError, SamplingConfig
from ..distribution import stats_from_top_logprobs
from .gguf_vocab import GGUFVocab
from .http_replies import (Reply, ReplyError, first_choice, parse_completion, parse_llama_completion,
                           parse_prompt_logprobs)
from .http_transport import HTTPSettings, PrefixMemo, Replicas
from .protocol import BackendError, Chunk, Scores, StopBefore

__all__ = ["HTTPSettings", "OpenAIHTTPBackend", "KINDS"]

KINDS = ("auto", "vllm", "llama.cpp", "llama-cpp-python", "openai")
OWNERS = {"vllm": "vllm", "sglang": "vllm", "llamacpp": "llama.cpp", "me": "llama-cpp-python"}


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
        self._models: list[dict] | None = None  # /v1/models' data, when asked
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
        self.can_score = self.server == "vllm"  # prompt_logprobs; the others have no equivalent
        self._n_ctx = props.get("n_ctx")
        self._adds_bos: bool | None = None
        self._discovered = self.server != "vllm"  # vLLM is asked lazily: an alias loads with its server down
        self._discover_lock = threading.RLock()
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
        self._models = data
        return OWNERS.get(str(data[0].get("owned_by", "")).lower(), "openai")

    def _props(self) -> dict:
        """Chat template, special-token texts and context size, where the server or a local
        tokenizer tells (vLLM: later, in ``_discover``)."""
        props = self._local.props() if self._local is not None else {}
        if self.server == "llama.cpp":
            reply, _ = self.replicas.request("GET", "/props")
            server = {"chat_template": reply.get("chat_template") or None, "bos_text": reply.get("bos_token", ""),
                      "eos_text": reply.get("eos_token", ""),
                      "n_ctx": (reply.get("default_generation_settings") or {}).get("n_ctx")}
            props = {**server, **props} if self._local is not None else server
        return props

    def _discover(self) -> None:
        """vLLM, once, before the first request that needs it: the context size
        (``max_model_len`` in /v1/models) and the EOS text (/tokenizer_info, only where
        vLLM runs with --enable-tokenizer-info-endpoint; a 404 is no error)."""
        if self._discovered:
            return
        with self._discover_lock:
            if self._discovered:
                return
            models = self._models or self.replicas.request("GET", "/v1/models")[0].get("data") or []
            for m in models:
                if m.get("id") == self._served_model or len(models) == 1:
                    self._n_ctx = m.get("max_model_len") or self._n_ctx
            try:
                info, _ = self.replicas.request("GET", "/tokenizer_info")
            except BackendError:
                info = {}
            eos = info.get("eos_token")
            self.eos_token_ids |= self._server_eos_ids({"eos_text": (eos.get("content", "") if isinstance(eos, dict)
                                                                     else eos) or ""})
            self._discovered = True

    @property
    def n_ctx(self) -> int | None:
        """The server's context size in tokens (None: it does not say)."""
        self._discover()
        return self._n_ctx

    @property
    def adds_bos(self) -> bool:
        """Whether this model's tokenizer puts a BOS before a prompt. Text-only APIs put it
        before a text prompt themselves (their aliases set ``bos_text = ""``)."""
        if self._adds_bos is None:
            self._adds_bos = bool(self.tokenize("", add_bos=True)) if self.token_ids else True
        return self._adds_bos

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
                 rng: np.random.Generator, stop_before: StopBefore | None = None,
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

    def _chunk(self, reply: Reply, context, max_tokens: int, stop_before: StopBefore | None, position: int) -> Chunk:
        """Apply ``stop_before`` over the reply's tokens and build the Chunk (protocol steps 3-4)."""
        steps = reply.steps
        stats = [stats_from_top_logprobs(s.top, position + i) if s.top else None for i, s in enumerate(steps)]
        cut, stopped = len(steps), False
        if stop_before is not None:
            for i, st in enumerate(stats):
                # a token the server gave no distribution for is not asked
                written = [s.token for s in steps[:i] if s.token is not None and not s.is_eos]
                if st is not None and stop_before(st, written):
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
        if self.server == "vllm":
            self._discover()
        reply, replica = self.replicas.request("POST", "/v1/completions", body, key=context)
        try:
            out = parse_completion(reply, server=self.server, n_top=n, eos_ids=self.eos_token_ids)
        except ReplyError as e:
            raise BackendError(f"backend {self.name!r}: {e}: {self.replicas.line(reply)}") from None
        last = out.steps[-1] if out.steps else None
        if last is not None and last.is_eos and last.token is not None:
            self.eos_token_ids |= {last.token}  # learnt: the same id ends later replies, whatever they say
        return out, replica

    def _complete_llama_server(self, context, max_tokens, sampling, seed, n) -> tuple[Reply, int]:
        """llama-server's native /completion: prompt ids in, generated ids and per-token
        top-N (with ids) out; its OpenAI route drops token ids."""
        body = {"prompt": list(context), "n_predict": max_tokens, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "n_probs": n,
                "return_tokens": True, "cache_prompt": True}
        if seed is not None:
            body["seed"] = seed
        reply, replica = self.replicas.request("POST", "/completion", body, key=context)
        try:
            return parse_llama_completion(reply, n_top=n), replica
        except ReplyError as e:
            raise BackendError(f"backend {self.name!r}: {e}") from None

    # --- optional ability: teacher-forced scores (vLLM's prompt_logprobs)
    def score(self, context: list[int], tokens: list[int], *, with_stats: bool = False) -> Scores:
        """``Scores`` of ``tokens`` after ``context`` (protocol.py), from one vLLM request
        with ``prompt_logprobs`` (top 1, or top N with ``with_stats``). vLLM computes
        prompt log-probabilities for the whole prompt, cached prefix or not."""
        if not self.can_score:
            raise BackendError(f"backend {self.name!r} ({self.server} server) cannot score tokens: it returns no "
                               f"prompt log-probabilities; serve the model with vLLM (prompt_logprobs)")
        if not tokens:
            return Scores(np.zeros(0), np.zeros(0, dtype=np.int64), [] if with_stats else None)
        if not context:
            raise BackendError(f"backend {self.name!r}: score needs a non-empty context")
        self._discover()
        full = list(context) + list(tokens)
        n = self.settings.top_logprobs if with_stats and self.has_stats else 1
        body = {"prompt": full, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": n,
                "return_tokens_as_token_ids": True}
        if self._served_model:
            body["model"] = self._served_model
        t = time.perf_counter()
        reply, replica = self.replicas.request("POST", "/v1/completions", body, key=full)
        try:
            logprobs, top1, tops = parse_prompt_logprobs(first_choice(reply), len(context), list(tokens), n_top=n)
        except ReplyError as e:
            raise BackendError(f"backend {self.name!r}: {e}: {self.replicas.line(reply)}") from None
        self.replicas.remember(full, replica)
        stats = [stats_from_top_logprobs(top, i) for i, top in enumerate(tops)] if with_stats else None
        usage = reply.get("usage") or {}
        return Scores(logprobs, top1, stats, prefill_tokens=int(usage.get("prompt_tokens") or len(full)),
                      prefill_s=time.perf_counter() - t)

    def close(self) -> None:
        self.replicas.close()
