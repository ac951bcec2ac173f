"""Render chat prompts with a model's own chat template (Jinja, as shipped in its GGUF).

Contract: ``chat_prompt(backend, user)`` returns the exact text the model reads,
ending where the assistant's reply begins. A model without a chat template
(e.g. Gemma-3-270M, a base model) gets a plain ``Question:/Answer:`` frame.
"""
from __future__ import annotations

from functools import lru_cache

PLAIN_FRAME = "Question: {user}\nAnswer:"


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_chat(template: str | None, messages: list[dict], *, bos_text: str = "", eos_text: str = "") -> str:
    if not template:
        user = "\n\n".join(m["content"] for m in messages if m["role"] != "assistant")
        return PLAIN_FRAME.format(user=user)
    return _compile(template).render(messages=messages, add_generation_prompt=True,
                                     bos_token=bos_text, eos_token=eos_text)


def chat_prompt(backend, user: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = render_chat(backend.chat_template, messages, bos_text=backend.bos_text,
                       eos_text=getattr(backend, "eos_text", ""))
    # A backend whose tokenizer adds BOS itself (add_bos=True) must not get it twice.
    if backend.bos_text and text.startswith(backend.bos_text) and backend.tokenize("", add_bos=True):
        text = text[len(backend.bos_text):]
    return text
