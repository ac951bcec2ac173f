"""The served pair: per request, the config, the prompt and the checks; then the run.

    service = GuidedService(pair, args, generation_config, served_model="guided", slots=1, max_queue=16)
    job = service.prepare(request)   # RequestError (400) for anything a request gets wrong
    service.admit(job)               # QueueFull (503) when the queue is full
    async for kind, value in service.run(job): ...   # ("text", str) ... then ("done", trace)

Config: the server's flags (``args``, parsed by ``cli.flags.add_generation_flags``) are the
defaults; the request's guided fields replace them on a copy, and the result goes through
``user_config.generation_config``, as every command's flags do (so ``--calibration``,
``always``'s budget and every ``GenerationConfig`` check apply, and a field added to
``GenerationConfig`` is accepted by the server with no change here).

Checks before a request is admitted (so a stream never starts on a bad request): the
config, the policy's abilities on this pair (``engine.check_abilities``: verify needs an
oracle that can score), and the prompt's length against each model's context.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..backends.protocol import BackendError
from ..user_config import INTERNAL_FIELDS  # set by the library, never by a flag or a request
from ..config import GenerationConfig, GuidedError
from ..engine import check_abilities, choose_handoff, guided_generate
from ..policies import make_policy
from ..prompts import adds_bos, prompt_ids, render_chat
from ..trace import BASE, ORACLE
from .protocol import CHAT, RequestError, ServeRequest
from .scheduler import Scheduler
from .stream import Cancelled, ReportingBackend, TextStream



def guided_fields() -> frozenset[str]:
    """The GenerationConfig fields a request may set."""
    return frozenset(f.name for f in dataclasses.fields(GenerationConfig) if f.name not in INTERNAL_FIELDS)


@dataclass
class Job:
    request: ServeRequest
    config: GenerationConfig
    prompt: str
    prompt_tokens: int
    cancel: threading.Event = field(default_factory=threading.Event)  # set: stop the generation
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set: the client disconnected
    ticket: asyncio.Future | None = None  # resolves when the job holds a slot
    started: bool = False  # run() began (or the job was given up): the ticket is run()'s now
    admitted_at: float = 0.0
    queue_s: float = 0.0
    held_s: float = 0.0
    mismatch: bool = False


class GuidedService:
    def __init__(self, pair, args: argparse.Namespace, generation_config, *, served_model: str, slots: int,
                 max_queue: int, prefix_cache: bool = False):
        self.pair = pair
        self.prefix_cache = prefix_cache
        self.args = args
        self.generation_config = generation_config
        self.served_model = served_model
        self.fields = guided_fields()
        self.handoff = choose_handoff(pair.base, pair.oracle)
        self.defaults = generation_config(args)  # the server's own config: fails at start, not per request
        self.scheduler = Scheduler(slots, max_queue)
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="guided-serve")

    # --- before admission -------------------------------------------------------------------
    def prepare(self, request: ServeRequest) -> Job:
        config = self.config_for(request)
        prompt = self.prompt_for(request)
        try:
            check_abilities(config, make_policy(config), self.pair.base, self.pair.oracle, self.handoff)
        except BackendError as e:
            raise RequestError(str(e), "policy") from None
        return Job(request, config, prompt, self.check_context(prompt, "messages" if request.kind == CHAT else "prompt"))

    def config_for(self, request: ServeRequest) -> GenerationConfig:
        ns = argparse.Namespace(**vars(self.args))
        for name, value in request.generation.items():
            setattr(ns, name, value)
        try:
            return self.generation_config(ns)
        except GuidedError as e:  # ConfigError and the calibration/router file errors: one line each
            message, name = str(e), _field_of(str(e))
            if name in request.names:  # say max_tokens where the body said max_tokens
                message, name = request.names[name] + message[len(name):], request.names[name]
            raise RequestError(message, name) from None
        except TypeError as e:  # a value of a type no check expected (e.g. a list for k)
            raise RequestError(f"bad guided parameter: {e}") from None

    def prompt_for(self, request: ServeRequest) -> str:
        """Chat: the base model's chat template, as ``guided eval`` renders it (``prompts.chat_prompt``)."""
        if request.kind != CHAT:
            return request.prompt
        base = self.pair.base
        try:
            text = render_chat(base.chat_template, list(request.messages), bos_text=base.bos_text,
                               eos_text=getattr(base, "eos_text", ""))
        except Exception as e:  # noqa: BLE001 - a template that refuses these messages (raise_exception)
            raise RequestError(f"messages: the chat template refused them: {e}", "messages") from None
        if base.bos_text and text.startswith(base.bos_text) and adds_bos(base):
            text = text[len(base.bos_text):]  # the same rule as chat_prompt: never a doubled BOS
        return text

    def check_context(self, prompt: str, param: str = "prompt") -> int:
        """The prompt's tokens for the base (``usage.prompt_tokens``); RequestError when a
        model's context cannot hold it and one generated token."""
        counts = {}
        for role, backend in ((BASE, self.pair.base), (ORACLE, self.pair.oracle)):
            if getattr(backend, "token_ids", False):
                counts[role] = len(prompt_ids(backend, prompt))
                n_ctx = getattr(backend, "n_ctx", None)
                if n_ctx is not None and counts[role] >= n_ctx:
                    raise RequestError(f"the prompt is {counts[role]} tokens but the {role} model's context holds "
                                       f"{n_ctx} (n_ctx) with room for the reply: shorten it, or start the server "
                                       f"with a larger --n_ctx", param)
        return counts.get(BASE, 0)

    # --- the run ------------------------------------------------------------------------------
    def admit(self, job: Job) -> None:
        """Take a slot or a place in the queue (``QueueFull`` beyond it): called by the
        handler before any response starts, so a refusal is still a 503."""
        job.ticket = self.scheduler.admit()
        job.admitted_at = time.perf_counter()

    def client_gone(self, job: Job) -> None:
        """The client disconnected: stop the generation at its next token; a request that
        never started gives its place (or slot) back here."""
        job.cancel.set()
        job.gone.set()
        if not job.started and job.ticket is not None:
            job.started = True  # nobody will run it now
            self.scheduler.abandon(job.ticket)

    async def run(self, job: Job):
        """Yield ("text", piece) as text becomes final (streaming requests), then ("done",
        trace) or ("error", exception): ``Cancelled`` when the client went away."""
        if job.started:  # given up before it began
            yield "error", Cancelled("the client disconnected while queued")
            return
        job.started = True
        loop = asyncio.get_running_loop()
        left = asyncio.ensure_future(job.gone.wait())
        try:
            await asyncio.wait({job.ticket, left}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.scheduler.abandon(job.ticket)
            raise
        finally:
            left.cancel()
        if job.gone.is_set():
            self.scheduler.abandon(job.ticket)
            yield "error", Cancelled("the client disconnected while queued")
            return
        job.queue_s = time.perf_counter() - job.admitted_at
        events: asyncio.Queue = asyncio.Queue()

        def put(kind, value):
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        def work():
            t = time.perf_counter()
            try:
                trace = self.generate(job, (lambda text: put("text", text)) if job.request.stream else None)
                put("done", trace)
            except Exception as e:  # noqa: BLE001 - reported to the client, never crashes the server
                put("error", e)
            finally:
                job.held_s = time.perf_counter() - t

        future = loop.run_in_executor(self.executor, work)
        future.add_done_callback(lambda _: self.scheduler.release(job.held_s))
        try:
            while True:
                kind, value = await events.get()
                yield kind, value
                if kind != "text":
                    return
        finally:
            job.cancel.set()  # a consumer that stops early (disconnect) stops the generation

    def generate(self, job: Job, emit) -> object:
        """Run the engine (in a worker thread) through per-request backend proxies."""
        config = job.config
        if not self.prefix_cache:
            self.cold_caches()
        stream = None
        if emit is not None:
            n_prompt = job.prompt_tokens if self.handoff == "tokens" else None
            stream = TextStream(emit, config.stop, verify=config.consult_mode == "verify", n_prompt=n_prompt)
        base = ReportingBackend(self.pair.base, BASE, stream, job.cancel)
        oracle = ReportingBackend(self.pair.oracle, ORACLE, stream, job.cancel)
        trace = guided_generate(job.prompt, base, oracle, config, seed_key=job.request.seed_key)
        trace.timings.load_s = self.pair.load_s
        if stream is not None:
            stream.finish(trace.result)
            job.mismatch = stream.mismatch
        return trace

    def cold_caches(self) -> None:
        """Empty the embedded models' KV caches, so a request reads its prompt in one batch as
        a fresh ``guided generate`` does: llama.cpp is not batch-invariant, and a prefix kept
        from an earlier request could flip a near-tie argmax. A request's output then does not
        depend on the requests before it (``--prefix_cache`` trades that for speed)."""
        for backend in {id(b): b for b in (self.pair.base, self.pair.oracle)}.values():
            if not getattr(backend, "concurrent", True) and hasattr(backend, "keep"):
                backend.keep(0)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _field_of(message: str) -> str | None:
    """The field a ConfigError message names (its first word), for the error's ``param``."""
    first = message.split(" ", 1)[0]
    return first if first.isidentifier() else None
