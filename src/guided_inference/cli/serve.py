"""``guided serve``: load the pair once, then serve it over HTTP until stopped.

    guided serve --base_model 0.5B --oracle_model 1.5B --policy verify --port 8100

Every ``guided generate`` flag is accepted and becomes the default of every request
(a request's body overrides it per request). The server is ``serve/``; FastAPI and
uvicorn are imported only when the command runs (the ``[serve]`` extra).
"""
from __future__ import annotations

import logging
import sys

from ..config import GuidedError, check_int
from .flags import add_generation_flags, add_model_flags, flag, generation_config

DEFAULT_PORT = 8100


def register(sub) -> None:
    s = sub.add_parser("serve", help="serve the guided pair as an OpenAI-compatible server (/v1/completions, "
                                     "/v1/chat/completions)")
    add_model_flags(s)
    add_generation_flags(s)
    flag(s, "host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    flag(s, "port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    flag(s, "max_queue", type=int, default=16,
         help="requests that may wait for a busy pair; beyond them: 503 with Retry-After (default 16)")
    flag(s, "concurrency", type=int, default=1,
         help="requests run at once when both models are HTTP backends (their servers batch); an embedded "
              "pair runs one at a time (default 1)")
    flag(s, "served_model_name", default="guided", help="the model id clients send and /v1/models lists (default guided)")
    flag(s, "prefix_cache", action="store_true",
         help="keep each embedded model's KV cache between requests (faster on shared prefixes; off: every request "
              "reads its prompt afresh, so its output is that of `guided generate` whatever came before)")
    flag(s, "log_prompts", action="store_true", help="write each request's prompt to the log (off: parameters only)")
    s.set_defaults(func=cmd_serve, make_config=generation_config)


def slots_for(pair, concurrency: int) -> int:
    """--concurrency for a pair whose two backends are both concurrent (HTTP), else 1."""
    check_int("concurrency", concurrency, 1)
    return concurrency if all(getattr(b, "concurrent", False) for b in (pair.base, pair.oracle)) else 1


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as e:
        raise GuidedError(f"guided serve needs the [serve] extra (pip install 'guided-inference[serve]'): {e}") from None
    from ..model_pair import load_pair
    from ..serve.service import GuidedService

    check_int("port", args.port, 0)
    check_int("max_queue", args.max_queue, 0)
    check_int("concurrency", args.concurrency, 1)
    args.make_config(args)  # a bad flag fails before the models load
    _setup_logging()
    log = logging.getLogger("guided_inference.serve")
    pair = load_pair(args.base_model, args.oracle_model, n_ctx=args.n_ctx)
    slots = slots_for(pair, args.concurrency)
    if args.concurrency > 1 and slots == 1:
        log.info("--concurrency %d ignored: the embedded pair runs one sequence at a time", args.concurrency)
    service = GuidedService(pair, args, args.make_config, served_model=args.served_model_name, slots=slots,
                            max_queue=args.max_queue, prefix_cache=args.prefix_cache)
    app = create_app(service, log_prompts=args.log_prompts)
    log.info("serving %s (base %s, oracle %s, %s handoff, policy %s) on http://%s:%d with %d slot(s), queue %d; "
             "loaded in %.1f s", args.served_model_name, pair.base.name, pair.oracle.name, service.handoff,
             service.defaults.policy, args.host, args.port, slots, args.max_queue, pair.load_s)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run()
    finally:
        service.close()
    return 0


def _setup_logging() -> None:
    log = logging.getLogger("guided_inference.serve")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
