"""``guided serve``: the guided pair behind an OpenAI-compatible HTTP server.

    guided serve --base_model 0.5B --oracle_model 1.5B --policy verify --port 8100

Any OpenAI client (the ``openai`` package, lm-evaluation-harness ``local-completions`` /
``local-chat-completions``, chat UIs) then runs guided generation unchanged. Modules:

- ``protocol``: the OpenAI wire format: request bodies parsed into ``ServeRequest`` (one-line
  ``RequestError`` naming the field), responses, stream chunks, ``usage`` with ``guided``;
- ``stream``: a per-request proxy around each backend that reports the text the engine has
  made final (for streaming) and stops the generation when the client is gone;
- ``scheduler``: slots with a bounded queue (503 and ``Retry-After`` beyond it);
- ``service``: the loaded pair; per request: the config (server flags as defaults, the
  body's fields over them, validated by ``GenerationConfig``), the prompt, the run;
- ``app``: the FastAPI routes, SSE, errors and the per-request log line.

The ``serve`` subcommand is ``guided_inference/cli/serve.py``. FastAPI and uvicorn (the
``[serve]`` extra) are imported only by ``app`` and ``cli.serve.cmd_serve``.
"""
