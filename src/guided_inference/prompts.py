"""Render chat prompts with a model's own chat template (Jinja, as shipped in its GGUF).

Contract: ``chat_prompt(backend, user)`` returns the text the models read, ending
where the assistant's reply begins. Whether a BOS is added is decided per model when
it reads the prompt (``prompt_ids``, from ``Backend.adds_bos``), not by the base alone. A model without a chat template
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
    # A model whose tokenizer adds its BOS itself must not get it twice. (SmolLM2's "BOS" is
    # <|im_start|>, which its template needs as text: it does not add it, so it stays.)
    if backend.bos_text and text.startswith(backend.bos_text) and adds_bos(backend):
        text = text[len(backend.bos_text):]
    return text


def adds_bos(backend) -> bool:
    """Whether ``backend`` puts its BOS before a prompt itself (its ``adds_bos``, else a probe)."""
    flag = getattr(backend, "adds_bos", None)
    return bool(backend.tokenize("", add_bos=True)) if flag is None else bool(flag)


def prompt_ids(backend, prompt: str) -> list[int]:
    """The prompt as ``backend`` reads it, with exactly one BOS where this model wants one:
    decided per model, so a prompt rendered by another model's template (whose BOS text may
    already lead it) is not given a second one."""
    lead = bool(backend.bos_text) and prompt.startswith(backend.bos_text)
    return backend.tokenize(prompt, add_bos=adds_bos(backend) and not lead)
