"""The FastAPI application of ``guided serve``: routes, SSE, errors, the request log.

Routes: ``POST /v1/completions`` (the prompt as given), ``POST /v1/chat/completions`` (the
base model's chat template applied here), ``GET /v1/models``, ``GET /health``.

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``), one line:
400 for a bad request (``RequestError``, ``ConfigError``), 404 for another model's name,
503 with ``Retry-After`` when the queue is full, 502 when a backend failed, 500 for
anything else (logged with its traceback; the server keeps serving). In a stream that has
begun, an error is one ``data: {"error": ...}`` event before ``data: [DONE]``.

Log: one line per request on the ``guided_inference.serve`` logger, a JSON object with
its id, route, status, parameters and timings (queue, generation, total) and the token
counts; the prompt only with ``--log_prompts``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..backends.protocol import BackendError
from . import protocol as P
from .scheduler import QueueFull
from .service import GuidedService
from .stream import Cancelled

log = logging.getLogger("guided_inference.serve")


def create_app(service: GuidedService, *, log_prompts: bool = False) -> FastAPI:
    app = FastAPI(title="guided-inference", docs_url=None, redoc_url=None, openapi_url=None)
    model = service.served_model

    @app.get("/health")
    async def health():
        s = service.scheduler
        return {"status": "ok", "model": model, "slots": s.slots, "running": s.running, "queued": s.queued,
                "max_queue": s.max_queue}

    @app.get("/v1/models")
    async def models():
        pair = service.pair
        return {"object": "list", "data": [{
            "id": model, "object": "model", "created": int(time.time()), "owned_by": "guided-inference",
            "base_model": pair.base.name, "oracle_model": pair.oracle.name, "base_model_id": pair.base.model_id,
            "oracle_model_id": pair.oracle.model_id, "handoff": service.handoff,
            "max_model_len": getattr(pair.base, "n_ctx", None), "defaults": service.defaults.params(),
            "guided_parameters": sorted(service.fields | set(P.EXTRA_GUIDED))}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, P.COMPLETION)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handle(request, P.CHAT)

    async def handle(request: Request, kind: str):
        rid = f"{'chatcmpl' if kind == P.CHAT else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        record = {"id": rid, "route": request.url.path, "client": request.client.host if request.client else None}
        t0 = time.perf_counter()
        try:
            try:
                body = await request.json()
            except ValueError:
                raise P.RequestError("the request body is not valid JSON") from None
            req = P.parse_request(kind, body, service.fields, query_trace=_truthy(request.query_params.get("trace")))
            record["params"] = req.logged()
            if req.model is not None and req.model != model:
                raise P.RequestError(f"model {req.model!r} is not served here: this server serves {model!r}",
                                     "model", status=404)
            job = await asyncio.to_thread(service.prepare, req)
            if log_prompts:
                record["prompt"] = job.prompt
            record["prompt_tokens"] = job.prompt_tokens
            service.admit(job)
        except P.RequestError as e:
            return _finish(record, t0, _error(e.status, str(e), param=e.param,
                                              kind="not_found_error" if e.status == 404 else "invalid_request_error"))
        except BackendError as e:  # a model server that cannot tokenize the prompt (down, refusing)
            return _finish(record, t0, _error(502, f"backend error: {e}", kind="backend_error"))
        except QueueFull as e:
            return _finish(record, t0, _error(503, str(e), kind="server_busy", headers={"Retry-After": str(e.retry_after_s)}))
        except Exception as e:  # noqa: BLE001 - a bug must not take the server down
            log.error("request %s failed: %s", rid, traceback.format_exc())
            return _finish(record, t0, _error(500, f"internal error: {type(e).__name__}: {e}", kind="server_error"))
        watcher = asyncio.ensure_future(_watch(request, lambda: service.client_gone(job)))
        headers = {"X-Request-Id": rid}
        if req.stream:
            return StreamingResponse(_sse(service, job, rid, model, record, t0, watcher), headers=headers,
                                     media_type="text/event-stream")
        try:
            trace, error = None, None
            async for event, value in service.run(job):
                if event == "done":
                    trace = value
                elif event == "error":
                    error = value
        finally:
            watcher.cancel()
        if error is not None:
            return _finish(record, t0, _failure(rid, error), job)
        out = P.response(kind, rid, model, trace.result, trace, job.prompt_tokens, with_trace=req.trace)
        return _finish(record, t0, JSONResponse(out, headers=headers), job, trace)

    return app


async def _sse(service, job, rid: str, model: str, record: dict, t0: float, watcher):
    """The event stream: a role chunk (chat), text chunks as they become final, the finish
    chunk (with the trace when asked), the usage chunk when asked, [DONE]."""
    kind, req, created = job.request.kind, job.request, int(time.time())
    status, trace = 200, None
    try:
        if kind == P.CHAT:
            yield _event(P.chunk(kind, rid, model, created, role=True, include_usage=req.include_usage))
        async for event, value in service.run(job):
            if event == "text":
                yield _event(P.chunk(kind, rid, model, created, text=value, include_usage=req.include_usage))
            elif event == "done":
                trace = value
                last = P.chunk(kind, rid, model, created, reason=P.finish_reason(trace.finish_reason),
                               include_usage=req.include_usage, text="" if kind == P.COMPLETION else None)
                if req.trace:
                    last["trace"] = trace.to_dict()
                yield _event(last)
                if req.include_usage:
                    yield _event(P.usage_chunk(kind, rid, model, created, job.prompt_tokens, trace))
            else:
                failure = _failure(rid, value)
                status = failure.status_code
                if not isinstance(value, Cancelled):
                    yield "data: " + failure.body.decode() + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        if status == 200 and trace is None:
            status = 499  # the client went away mid-stream (nginx's code for it)
        record["stream"] = True
        _log(record, t0, status, job, trace)


def _event(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


async def _watch(request: Request, on_gone) -> None:
    """Wait for the client's disconnect (the body has been read: the next message is it)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - a receive that fails means the connection is gone too
        pass
    on_gone()


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def _error(status: int, message: str, *, param: str | None = None, kind: str = "invalid_request_error",
           headers: dict | None = None) -> JSONResponse:
    return JSONResponse(P.error_body(message, param=param, kind=kind), status_code=status, headers=headers)


def _failure(rid: str, error: Exception) -> JSONResponse:
    """The response for an error raised by the generation."""
    if isinstance(error, Cancelled):
        return _error(499, str(error), kind="cancelled")
    if isinstance(error, BackendError):
        return _error(502, f"backend error: {error}", kind="backend_error")
    if isinstance(error, P.RequestError):
        return _error(error.status, str(error), param=error.param)
    log.error("request %s failed: %s", rid, "".join(traceback.format_exception(error)))
    return _error(500, f"internal error: {type(error).__name__}: {error}", kind="server_error")


def _finish(record: dict, t0: float, response, job=None, trace=None):
    _log(record, t0, response.status_code, job, trace)
    return response


def _log(record: dict, t0: float, status: int, job, trace) -> None:
    record["status"] = status
    record["total_s"] = round(time.perf_counter() - t0, 4)
    if job is not None:
        record["queue_s"] = round(job.queue_s, 4)
        if job.mismatch:
            record["stream_mismatch"] = True  # streamed text is not a prefix of the result: a bug
    if trace is not None:
        record.update(generation_s=round(trace.timings.generation_s, 4), completion_tokens=trace.total_tokens_generated,
                      base_tokens=trace.base_tokens, oracle_tokens=trace.oracle_tokens,
                      consults=len(trace.cheat_positions), finish_reason=trace.finish_reason)
    log.info("request %s", json.dumps(record, ensure_ascii=False, default=str))
