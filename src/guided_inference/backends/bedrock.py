"""AWS Bedrock backend: Meta Llama models through ``invoke_model`` with a raw prompt.

    backend = BedrockBackend("us.meta.llama3-2-1b-instruct-v1:0", name="bedrock-1B", region="us-east-1")

Text only: Bedrock takes a prompt string and returns generated text
(``{"generation", "generation_token_count", "stop_reason"}``), with neither token
ids nor log-probabilities. So ``token_ids = False`` (the engine hands off
through text) and ``has_stats = False`` (a policy that needs statistics is
refused at start by the engine, naming this backend). The prompt is sent as
written, BOS text included: Bedrock's Llama prompt format starts with
``<|begin_of_text|>``. boto3 is imported only when this backend is built;
credentials come from boto3's usual chain (environment, profile, role).
"""
from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from ..config import SamplingConfig
from ..distribution import StepStats
from .protocol import BackendError, Chunk


class BedrockBackend:
    has_stats = False
    token_ids = False
    concurrent = True  # boto3 clients are thread-safe

    def __init__(self, model_id: str, *, name: str | None = None, region: str | None = None,
                 tokenizer_family: str | None = None, chat_template: str | None = None, bos_text: str = "",
                 eos_text: str = "", client=None, retries: int = 4, timeout_s: float = 300.0):
        self.name = name or model_id
        self.model_id = model_id
        self.sha256 = None
        self.tokenizer_key = tokenizer_family or f"bedrock:{model_id}"
        self.chat_template = chat_template
        self.bos_text = bos_text
        self.eos_text = eos_text
        self.region = region
        self.client = client if client is not None else self._client(region, retries, timeout_s)

    @staticmethod
    def _client(region, retries: int, timeout_s: float):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise BackendError("the Bedrock backend needs boto3: pip install 'guided-inference[bedrock]'") from None
        config = Config(retries={"max_attempts": retries + 1, "mode": "standard"}, read_timeout=timeout_s,
                        connect_timeout=10)
        return boto3.client("bedrock-runtime", region_name=region, config=config)

    def __repr__(self) -> str:
        return f"BedrockBackend({self.name!r}, model_id={self.model_id!r}, region={self.region!r})"

    # --- Backend protocol
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        if text == "":
            return []  # no tokenizer: the chat template's BOS text stays in the prompt, as Bedrock expects
        raise BackendError(f"backend {self.name!r} (Bedrock) is text-only: no tokenizer")

    def detokenize(self, ids: list[int]) -> bytes:
        if ids:
            raise BackendError(f"backend {self.name!r} (Bedrock) is text-only: no token ids")
        return b""

    def generate(self, context: str, max_tokens: int, sampling: SamplingConfig, rng: np.random.Generator,
                 stop_before: Callable[[StepStats], bool] | None = None, position: int = 0) -> Chunk:
        if stop_before is not None:
            raise BackendError(f"backend {self.name!r} (Bedrock) cannot run a per-token policy: "
                               f"it returns no per-token statistics")
        if not isinstance(context, str) or not context:
            raise BackendError(f"backend {self.name!r} (Bedrock) needs a non-empty text context")
        body = request_body(context, max_tokens, sampling)
        t = time.perf_counter()
        reply = self._invoke(body)
        chunk = Chunk(text=reply.get("generation", ""), eos=reply.get("stop_reason") == "stop")
        chunk.decode_tokens = min(int(reply.get("generation_token_count") or 0), max_tokens)
        chunk.prefill_tokens = int(reply.get("prompt_token_count") or 0)
        chunk.decode_s = time.perf_counter() - t
        if chunk.decode_tokens == 0 and chunk.text and not chunk.eos:
            chunk.decode_tokens = 1  # a reply that says it used no tokens still moved the text on
        return chunk

    def _invoke(self, body: dict) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.invoke_model(modelId=self.model_id, body=json.dumps(body),
                                                contentType="application/json", accept="application/json")
            return json.loads(response["body"].read())
        except ClientError as e:
            err = e.response.get("Error", {})
            raise BackendError(f"backend {self.name!r}: Bedrock {self.model_id} refused the request: "
                               f"{err.get('Code', 'error')}: {' '.join(str(err.get('Message', e)).split())}") from None
        except BotoCoreError as e:
            raise BackendError(f"backend {self.name!r}: Bedrock {self.model_id} failed: "
                               f"{' '.join(str(e).split())}") from None
        except (ValueError, KeyError) as e:
            raise BackendError(f"backend {self.name!r}: Bedrock {self.model_id} sent an unreadable reply: {e}") from None


def request_body(prompt: str, max_tokens: int, sampling: SamplingConfig) -> dict:
    """Bedrock's Llama request: temperature 0 is its greedy decoding."""
    return {"prompt": prompt, "max_gen_len": max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p}
