"""A STAND-IN for a vLLM server: real HTTP on 127.0.0.1 (http.server in a thread) that
answers in vLLM's documented OpenAI-completions format, with a canned toy model.

vLLM needs a GPU and cannot run here; this exists only to test the HTTP backend's
vLLM request path (token-id prompts, ``return_token_ids``, ``return_tokens_as_token_ids``,
EOS through ``finish_reason``/``stop_reason``, top-N ``logprobs``, ``prompt_logprobs``)
against the reply shapes of ``vllm/entrypoints/openai/protocol.py``:

  CompletionResponseChoice: index, text, logprobs {text_offset, token_logprobs, tokens,
      top_logprobs: [{key: logprob}]}, finish_reason ("stop" | "length"), stop_reason
      (None for the tokenizer's EOS, the token id for a generation-config EOS, the string
      for a stop string), token_ids and prompt_token_ids (with return_token_ids),
      prompt_logprobs ([None, {id: {logprob, rank, decoded_token}}, ...]).
  The token vLLM stopped at (EOS) is the last of token_ids and of logprobs.tokens, and
  its text is not in ``text``; the sampled token is added to a step's top_logprobs when
  it is not among the top N (N + 1 entries).
  /tokenize {prompt, add_special_tokens} -> {count, max_model_len, tokens, token_strs};
  /detokenize {tokens} -> {prompt}; /tokenizer_info only with
  --enable-tokenizer-info-endpoint (else 404); /v1/models says owned_by "vllm".

The toy model: ids 0 BOS, 1 ``<|eot_id|>`` (EOS), 2 ``<|eom_id|>`` (an extra EOS from the
generation config), then printable ASCII (one token per character). It continues
``script``: the next token is the script's character after the longest suffix of the
context that is a prefix of the script (after the whole script: ``eos_id``). It puts
logit 5 on that token and 4 - 0.25 d on the token d ids further on (mod vocabulary), so
every distribution is known exactly (``logprobs_after``).
"""
from __future__ import annotations

import http.server
import json
import math
import threading
import time

SPECIAL = {0: "<|begin_of_text|>", 1: "<|eot_id|>", 2: "<|eom_id|>"}
FIRST_CHAR = 3
VOCAB = FIRST_CHAR + (127 - 32)


def encode(text: str, *, add_bos: bool = False) -> list[int]:
    """Tokenize: special-token text becomes its id, every other character one token."""
    ids, i = ([0] if add_bos else []), 0
    while i < len(text):
        for tid, s in SPECIAL.items():
            if text.startswith(s, i):
                ids.append(tid)
                i += len(s)
                break
        else:
            c = text[i]
            ids.append(ord(c) - 32 + FIRST_CHAR if 32 <= ord(c) < 127 else ord("?") - 32 + FIRST_CHAR)
            i += 1
    return ids


def decode(ids: list[int], *, skip_special: bool = False) -> str:
    return "".join(("" if skip_special else SPECIAL[t]) if t in SPECIAL else chr(t - FIRST_CHAR + 32) for t in ids)


class VLLMStandIn:
    def __init__(self, script: str, *, model: str = "standin/toy-llama", eos_id: int = 1,
                 token_ids_field: bool = True, tokenizer_info: bool = False, off_top_at: tuple[int, ...] = ()):
        """``eos_id``: 1 finishes with stop_reason None, 2 with stop_reason 2 (vLLM's
        report of a generation-config EOS). ``token_ids_field=False``: a vLLM older than
        0.10.2 (no ``return_token_ids``; ids only as "token_id:N" strings).
        ``off_top_at``: generated positions where a sampling request (temperature > 0)
        draws the token ranked just below the requested top N."""
        self.script = encode(script)
        self.model, self.eos_id = model, eos_id
        self.token_ids_field, self.tokenizer_info, self.off_top_at = token_ids_field, tokenizer_info, off_top_at
        self.requests: list[tuple[str, dict | None]] = []
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self, method: str):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                standin.requests.append((self.path, body))
                status, reply = standin.answer(method, self.path, body)
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def bodies(self, path: str) -> list[dict]:
        return [b for p, b in self.requests if p == path]

    # --- the toy model
    def next_token(self, context: list[int]) -> int:
        s = self.script
        for k in range(min(len(s), len(context)), 0, -1):
            if context[-k:] == s[:k]:
                return s[k] if k < len(s) else self.eos_id
        return s[0]

    def logprobs_after(self, context: list[int]) -> list[tuple[int, float]]:
        """The whole next-token distribution as (id, logprob), most likely first."""
        best = self.next_token(context)
        logits = [(best, 5.0)] + [((best + d) % VOCAB, 4.0 - 0.25 * d) for d in range(1, VOCAB)]
        z = math.log(sum(math.exp(v) for _, v in logits))
        return [(t, v - z) for t, v in logits]

    # --- the endpoints
    def answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": self.model, "object": "model", "created": int(time.time()),
                                                     "owned_by": "vllm", "root": self.model, "max_model_len": 4096}]}
        if method == "GET" and path == "/tokenizer_info" and self.tokenizer_info:
            return 200, {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL[0],
                         "eos_token": {"content": SPECIAL[1], "special": True}, "model_max_length": 4096}
        if method == "POST" and path in ("/tokenize", "/detokenize", "/v1/completions"):
            if body.get("model") not in (None, self.model):
                return 404, {"object": "error", "message": f"The model `{body['model']}` does not exist.",
                             "type": "NotFoundError", "param": None, "code": 404}
            if path == "/tokenize":
                ids = encode(body["prompt"], add_bos=body.get("add_special_tokens", True))
                return 200, {"count": len(ids), "max_model_len": 4096, "tokens": ids, "token_strs": None}
            if path == "/detokenize":
                return 200, {"prompt": decode(body["tokens"])}
            return 200, self.complete(body)
        return 404, {"detail": "Not Found"}

    def complete(self, req: dict) -> dict:
        prompt = req["prompt"] if isinstance(req["prompt"], list) else encode(req["prompt"], add_bos=True)
        n = req.get("logprobs")
        as_ids = req.get("return_tokens_as_token_ids", False)
        key = (lambda t: f"token_id:{t}") if as_ids else (lambda t: decode([t]))
        context, gen, steps, finish = list(prompt), [], [], "length"
        for i in range(req.get("max_tokens", 16)):
            dist = self.logprobs_after(context)
            pick = 0
            if req.get("temperature", 1.0) > 0 and i in self.off_top_at:
                pick = n if n else 1  # the token ranked just below the top N
            token, lp = dist[pick]
            top = dict(dist[:n]) if n else {}
            top.setdefault(token, lp)  # vLLM adds the sampled token: N + 1 entries
            steps.append((token, lp, {key(t): v for t, v in top.items()}))
            gen.append(token)
            context.append(token)
            if token == self.eos_id:
                finish = "stop"
                break
        choice = {"index": 0, "text": decode(gen, skip_special=True), "logprobs": None, "finish_reason": finish,
                  "stop_reason": self.eos_id if finish == "stop" and self.eos_id != 1 else None,
                  "prompt_logprobs": None}
        if n is not None:
            offsets, at = [], len(decode(prompt))
            for t in gen:
                offsets.append(at)
                at += len(decode([t], skip_special=True))
            choice["logprobs"] = {"text_offset": offsets, "token_logprobs": [lp for _, lp, _ in steps],
                                  "tokens": [key(t) for t, _, _ in steps], "top_logprobs": [top for _, _, top in steps]}
        if self.token_ids_field:
            choice["token_ids"] = gen if req.get("return_token_ids") else None
            choice["prompt_token_ids"] = prompt if req.get("return_token_ids") else None
        if req.get("prompt_logprobs") is not None:
            choice["prompt_logprobs"] = [None] + [self._prompt_entry(prompt[:j], prompt[j], req["prompt_logprobs"])
                                                  for j in range(1, len(prompt))]
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(gen), "total_tokens": len(prompt) + len(gen),
                 "prompt_tokens_details": None}
        return {"id": f"cmpl-standin-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
                "model": self.model, "choices": [choice], "usage": usage}

    def _prompt_entry(self, context: list[int], actual: int, n: int) -> dict:
        """vLLM's prompt_logprobs entry: the top ``n`` and the prompt's own token, with ranks."""
        dist = self.logprobs_after(context)
        rank = {t: r + 1 for r, (t, _) in enumerate(dist)}
        chosen = dict(dist[:n])
        chosen.setdefault(actual, dict(dist)[actual])
        return {str(t): {"logprob": v, "rank": rank[t], "decoded_token": decode([t])} for t, v in chosen.items()}
