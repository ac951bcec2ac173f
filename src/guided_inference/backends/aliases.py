"""Model aliases: a name mapped to a backend, a model id, URLs and a tokenizer family.

    guided generate --base_model 1B --oracle_model 8B ...   # vLLM on localhost:8001 / :8008

Built in (``data/models.toml``): the original tool's ``1B``/``3B``/``8B``/``70B`` vLLM
servers, Hyperbolic, and Bedrock's Llama ids (``bedrock-1B`` ...). A user file,
``$GUIDED_MODELS_FILE`` or ``~/.config/guided-inference/models.toml``, has the same
layout; each of its ``[models.NAME]`` tables replaces the built-in one of that name
(so it can also point ``1B`` at other ports, or give a local server a name).
The embedded catalogue (``0.5B``, ``1.5B``, ...) stays in ``models.py``; an alias
of the same name wins over it.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..config import ConfigError

BACKENDS = ("openai_http", "bedrock", "llama_cpp", "transformers")
HTTP_TUNING = ("timeout_s", "connect_timeout_s", "retries", "backoff_s", "retry_after_max_s", "down_s", "top_logprobs")
FIELDS = {"backend", "model_id", "urls", "url", "server", "api_key_env", "tokenizer_family", "tokenizer",
          "chat_template", "bos_text", "eos_text", "eos_token_ids", "region", "path", "description", *HTTP_TUNING}


@dataclass(frozen=True)
class Alias:
    name: str
    backend: str
    model_id: str
    source: str  # "built-in" or the user file's path
    options: dict = field(default_factory=dict, hash=False, compare=False)

    def load(self, *, n_ctx: int = 4096, collect_stats: bool = True):
        """Build the backend this alias names."""
        o = self.options
        if self.backend == "openai_http":
            from .openai_http import HTTPSettings, OpenAIHTTPBackend

            settings = HTTPSettings(**{k: o[k] for k in HTTP_TUNING if k in o})
            return OpenAIHTTPBackend(
                o.get("urls") or [o["url"]], name=self.name, model_id=self.model_id or None,
                server=o.get("server", "auto"), tokenizer_family=o.get("tokenizer_family"),
                tokenizer=o.get("tokenizer"), chat_template=o.get("chat_template"), bos_text=o.get("bos_text"),
                eos_text=o.get("eos_text"), eos_token_ids=tuple(o.get("eos_token_ids", ())),
                api_key_env=o.get("api_key_env"), settings=settings, collect_stats=collect_stats)
        if self.backend == "bedrock":
            from .bedrock import BedrockBackend

            return BedrockBackend(self.model_id, name=self.name, region=o.get("region"),
                                  tokenizer_family=o.get("tokenizer_family"), chat_template=o.get("chat_template"),
                                  bos_text=o.get("bos_text", ""), eos_text=o.get("eos_text", ""))
        if self.backend == "transformers":
            from .transformers_backend import TransformersBackend

            return TransformersBackend(o.get("path") or self.model_id, name=self.name)
        from .llama_cpp import LlamaCppBackend
        from ..models import resolve

        path, model_id, sha = resolve(o.get("path") or self.model_id)
        return LlamaCppBackend(path, name=self.name, model_id=model_id, sha256=sha, n_ctx=n_ctx,
                               collect_stats=collect_stats)


def user_file() -> Path:
    if os.environ.get("GUIDED_MODELS_FILE"):
        return Path(os.environ["GUIDED_MODELS_FILE"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "guided-inference" / "models.toml"


def _read(text: str, source: str) -> tuple[dict, dict]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"model aliases file {source}: {e}") from None
    return data.get("templates", {}), data.get("models", {})


def load_aliases() -> dict[str, Alias]:
    """Built-in aliases, then the user file's (which replace built-in ones by name)."""
    builtin = resources.files("guided_inference").joinpath("data/models.toml").read_text(encoding="utf-8")
    templates, models = _read(builtin, "built-in")
    sources = dict.fromkeys(models, "built-in")
    path = user_file()
    if path.is_file():
        t, m = _read(path.read_text(encoding="utf-8"), str(path))
        templates.update(t)
        models.update(m)
        sources.update(dict.fromkeys(m, str(path)))
    return {name: _alias(name, table, templates, sources[name]) for name, table in models.items()}


def _alias(name: str, table: dict, templates: dict, source: str) -> Alias:
    where = f"model alias {name!r} ({source})"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table, got {table!r}")
    unknown = sorted(set(table) - FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    backend = table.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "openai_http" and not (table.get("urls") or table.get("url")):
        raise ConfigError(f"{where}: an openai_http alias needs urls = [\"http://host:port\", ...]")
    if backend != "openai_http" and not (table.get("model_id") or table.get("path")):
        raise ConfigError(f"{where}: model_id (or path) is required")
    options = {k: v for k, v in table.items() if k not in ("backend", "model_id")}
    if isinstance(options.get("urls"), str):
        options["urls"] = [options["urls"]]
    template = options.get("chat_template")
    if template is not None and template in templates:
        options["chat_template"] = templates[template]
        options["template_name"] = template
    return Alias(name, backend, table.get("model_id", ""), source, options)


def find_alias(name: str) -> Alias | None:
    return load_aliases().get(name)


def endpoint(alias: Alias) -> str:
    """Where an alias's model runs, for people: its base URLs (host and port; replicas
    joined by ", "), Bedrock's model id and region, or the local file it loads."""
    o = alias.options
    if alias.backend == "openai_http":
        return ", ".join(o.get("urls") or [o["url"]])
    if alias.backend == "bedrock":
        region = o.get("region") or "the AWS default region"
        return f"bedrock {alias.model_id} in {region}"
    return f"local {o.get('path') or alias.model_id}"


def alias_rows() -> list[dict]:
    """Rows for ``guided models list``: the keys of ``models.list_models`` plus ``endpoint``."""
    rows = []
    for a in load_aliases().values():
        o = a.options
        where = endpoint(a)
        role = o.get("description") or f"{a.backend}{' ' + o['server'] if o.get('server') else ''} {where}".strip()
        if a.source != "built-in":
            role += f" (from {a.source})"
        rows.append({"name": a.name, "aliases": [], "backend": a.backend, "model_id": a.model_id or o.get("path", ""),
                     "size": None, "sha256": None, "cached": None, "role": role, "endpoint": where})
    return rows
