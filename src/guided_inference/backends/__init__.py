"""Backends: one file per kind, all speaking the protocol in ``protocol.py``.

``load_backend(name)`` maps a model name to a ready backend:
  - a catalogue name, alias (``0.5B``, ``1.5B``) or ``.gguf`` path -> embedded llama.cpp;
  - an alias (``1B``, ``8B``, ``bedrock-8B``, or one from the user's models.toml; see
    ``aliases.py`` here) -> the backend it names (HTTP, Bedrock, ...); aliases win over the catalogue;
  - ``http://host:port`` (several joined by commas: replicas) -> an OpenAI-compatible server,
    its kind detected (``openai_http.py``);
  - anything a loader in ``REMOTE_LOADERS`` accepts (checked first).
"""
from __future__ import annotations

from typing import Callable

from .cached import sample_token
from .protocol import Backend, BackendError, Chunk, Scores

# name -> loader(name, **options) for names that are not embedded models; filled by
# modules that provide remote backends so this file never imports them eagerly.
REMOTE_LOADERS: list[Callable[[str], Backend | None]] = []


def load_backend(name: str, *, n_ctx: int = 4096, collect_stats: bool = True) -> Backend:
    for loader in REMOTE_LOADERS:
        backend = loader(name)
        if backend is not None:
            return backend
    from .aliases import find_alias

    alias = find_alias(name)
    if alias is not None:
        return alias.load(n_ctx=n_ctx, collect_stats=collect_stats)
    if name.startswith(("http://", "https://")):
        from .openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend([u.strip() for u in name.split(",") if u.strip()], name=name,
                                 collect_stats=collect_stats)
    from ..models import resolve
    from .llama_cpp import LlamaCppBackend

    path, model_id, sha = resolve(name)
    return LlamaCppBackend(path, name=name, model_id=model_id, sha256=sha, n_ctx=n_ctx,
                           collect_stats=collect_stats)


__all__ = ["Backend", "BackendError", "Chunk", "Scores", "load_backend", "sample_token", "REMOTE_LOADERS"]
