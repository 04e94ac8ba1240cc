"""``eSurgeApiServer``: the FastAPI application around one engine, with API keys and limits.

Every request passes, in order: ``RequestGuard`` (body size, content type, key redaction),
authentication, JSON parsing and shape checks, operator limits (``ServerOptions``), the
per-key rate limiter, and admission (queue bound, draining). Only then does it reach the
engine; whatever ends it (answer, error, disconnect, timeout, shutdown) releases its ticket
and aborts its engine requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from esurge_core.components import ComponentKind
from esurge_core.engine.outputs import RequestOutput
from esurge_core.metrics import PROMETHEUS_CONTENT_TYPE, ApiKeyMetrics, render_prometheus
from esurge_core.plugin_manager import get_plugin_manager
from esurge_core.version import __version__
from esurge_server_openai.admission import Admission, Ticket
from esurge_server_openai.auth import ApiKeyRecord, ApiKeyStore, KeyUsage, authenticate
from esurge_server_openai.chat import create_chat_completion
from esurge_server_openai.completions import create_completion, num_prompts
from esurge_server_openai.errors import APIError, install_error_handlers
from esurge_server_openai.generation import ClosingStreamingResponse
from esurge_server_openai.health import EngineWatchdog, HealthReport
from esurge_server_openai.json_body import parse_body
from esurge_server_openai.options import ServerOptions
from esurge_server_openai.prompt_safety import render_chat
from esurge_server_openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from esurge_server_openai.rate_limit import RateLimiter
from esurge_server_openai.request_checks import (
    check_chat_request,
    check_completion_request,
    check_sampling_fields,
)
from esurge_server_openai.request_guard import RequestGuard

ModelT = TypeVar("ModelT", bound=BaseModel)

#: At shutdown, how long to wait for the engine to deliver the outputs of aborted requests.
SETTLE_TIMEOUT_S = 5.0


class eSurgeApiServer:
    """An OpenAI-compatible HTTP server for ``engine``.

    Args:
        engine: a running ``eSurge``.
        require_api_key: every route except ``/health`` answers 401 without a valid key.
        api_keys: ``{key: {"label": name}}`` accepted from the start; only their sha256
            digests are kept. A key's label salts the prefix cache of its requests.
        options: limits, timeouts and switches (``ServerOptions``; docs/operations.md).
    """

    def __init__(
        self,
        engine: Any,
        require_api_key: bool = False,
        api_keys: Mapping[str, Mapping[str, Any]] | None = None,
        options: ServerOptions | None = None,
    ):
        self.engine = engine
        self.require_api_key = require_api_key
        self.options = options or ServerOptions()
        self.keys = ApiKeyStore(api_keys)
        #: Per-key Prometheus series (labelled by key label, never the key), on /metrics.
        self.api_key_metrics = ApiKeyMetrics()
        self.model_name = str(engine.model_name)
        self.created = int(time.time())
        opts = self.options
        self.admission = Admission(engine, opts.max_queued_requests, opts.retry_after_s)
        self.rate_limiter = RateLimiter(opts.requests_per_minute, opts.tokens_per_minute)
        self.watchdog = EngineWatchdog(engine, opts.wedge_threshold_s)
        #: Turns model output into ``tool_calls`` (a tool-parser plugin, chosen by name).
        self.tool_parser = (
            get_plugin_manager()
            .registry.get(ComponentKind.TOOL_PARSER, opts.tool_call_parser)
            .load()()
        )
        #: Part of every engine request id of this server (to find them in the engine).
        self.id_tag = secrets.token_hex(4)
        self.app = self._build_app()

    # ------------------------------------------------------------------ keys

    def generate_api_key(self, label: str | None = None) -> str:
        """A new random key, accepted from now on; the only time its plaintext is seen."""
        return self.keys.generate(label)

    def revoke_api_key(self, key: str) -> bool:
        """Stop accepting ``key`` from the next request on; returns whether it was registered."""
        record = self.keys.revoke(key)
        if record is not None:
            self.rate_limiter.forget(record.label)
        return record is not None

    def usage(self) -> dict[str, KeyUsage]:
        """Requests and tokens served per key label."""
        return self.keys.usage()

    def total_usage(self) -> KeyUsage:
        """Requests and tokens served in all (with and without keys)."""
        return self.keys.total()

    def record_usage(self, key: ApiKeyRecord | None, prompt: int, completion: int) -> None:
        """Bill one served request (per key, in total, and against the key's token quota)."""
        self.keys.record_usage(key, prompt, completion)
        if key is not None:
            self.rate_limiter.record_tokens(key.label, prompt + completion)
            self.api_key_metrics.record_request(key.label, prompt, completion)

    # ------------------------------------------------------------------ serving

    def fire(self, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> int:
        """Serve until a signal or engine death (blocks); returns the process exit code."""
        server = self.uvicorn_server(host=host, port=port, log_level=log_level)
        server.run()
        return server.exit_code

    def uvicorn_server(self, **config: Any) -> Any:
        """A ``GracefulServer`` (uvicorn) for this app; ``config`` goes to ``uvicorn.Config``."""
        import uvicorn

        from esurge_server_openai.lifecycle import GracefulServer

        config.setdefault("http", "h11")
        config.setdefault("h11_max_incomplete_event_size", 2 * self.options.max_header_bytes)
        config.setdefault("timeout_graceful_shutdown", 10)
        return GracefulServer(uvicorn.Config(self.app, **config), self)

    def health(self) -> HealthReport:
        """What ``/health`` reports now."""
        return self.watchdog.report(self.admission.draining)

    def check_output(self, output: RequestOutput) -> None:
        """Raise a 500 when the engine failed the request."""
        if output.error:
            raise APIError(f"generation failed: {output.error}", status=500, type="server_error")

    def render_chat(self, body: ChatCompletionRequest | TokenizeRequest) -> list[int]:
        """Prompt ids of chat messages, user text never read as special tokens."""
        return render_chat(
            self.engine.tokenizer,
            body.messages or [],
            getattr(body, "tools", None),
            getattr(body, "chat_template", None),
            getattr(body, "chat_template_kwargs", None),
        )

    def deadline(self) -> float | None:
        """The monotonic time a request admitted now must finish by (None: no limit)."""
        timeout = self.options.request_timeout_s
        return None if timeout is None else time.monotonic() + timeout

    def _auth(self, request: Request) -> ApiKeyRecord | None:
        return authenticate(self.keys, request, self.require_api_key)

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise APIError(
                f"the model {model[:100]!r} does not exist; this server serves {self.model_name!r}",
                status=404,
                type="not_found_error",
                param="model",
                code="model_not_found",
            )

    def _alive(self) -> None:
        if not self.engine.is_alive:
            raise APIError("the engine is not running", status=503, type="server_error")

    async def _parse(self, request: Request, model: type[ModelT]) -> ModelT:
        return parse_body(await request.body(), model, self.options.max_json_depth)

    async def _run(
        self,
        key: ApiKeyRecord | None,
        num_seqs: int,
        handler: Callable[[Ticket], Awaitable[Response]],
    ) -> Response:
        """Rate-limit, admit, run ``handler``; the ticket ends with the response."""
        self._alive()
        ticket = self.admission.admit(num_seqs)
        try:
            if key is not None:
                self.rate_limiter.admit(key.label)
            response = await handler(ticket)
        except BaseException:
            ticket.release()
            raise
        if isinstance(response, ClosingStreamingResponse):
            response.on_close = _chain(response.on_close, ticket.release)
        else:
            ticket.release()
        return response

    def _build_app(self) -> FastAPI:
        server = self

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            task = asyncio.ensure_future(server._watch())
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await server._settle_engine_requests()

        app = FastAPI(title="eSurge OpenAI-compatible API", version=__version__, lifespan=lifespan)
        install_error_handlers(app)
        if self.options.cors_allow_origins:
            from fastapi.middleware.cors import CORSMiddleware

            origins = list(self.options.cors_allow_origins)
            app.add_middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_credentials="*" not in origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            )
        app.add_middleware(
            RequestGuard,
            max_body_bytes=self.options.max_body_bytes,
            max_header_bytes=self.options.max_header_bytes,
        )

        @app.get("/health")
        async def health() -> Response:
            """200 while the engine steps (or idles); 503 when dead, wedged or draining."""
            report = server.health()
            return JSONResponse(
                {"status": report.status, "detail": report.detail},
                status_code=report.http_status,
            )

        @app.get("/metrics")
        async def metrics(request: Request) -> Response:
            """The engine's Prometheus series and the per-key usage series (text format)."""
            server._auth(request)
            text = render_prometheus(
                server.engine.metrics.registry, server.api_key_metrics.registry
            )
            return Response(text, media_type=PROMETHEUS_CONTENT_TYPE)

        @app.get("/version")
        async def version(request: Request) -> Response:
            """The eSurge version."""
            server._auth(request)
            return JSONResponse({"version": __version__})

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            """The one served model."""
            server._auth(request)
            card = {
                "id": server.model_name,
                "object": "model",
                "created": server.created,
                "owned_by": "esurge",
                "max_model_len": server.engine.max_model_len,
            }
            return JSONResponse({"object": "list", "data": [card]})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            """OpenAI chat completions."""
            key = server._auth(request)
            body = await server._parse(request, ChatCompletionRequest)
            server._check_model(body.model)
            server._check_fields(body)
            check_chat_request(body, server.options)
            return await server._run(
                key,
                body.n,
                lambda ticket: create_chat_completion(server, request, body, key, ticket),
            )

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            """OpenAI (legacy) text completions."""
            key = server._auth(request)
            body = await server._parse(request, CompletionRequest)
            server._check_model(body.model)
            server._check_fields(body)
            check_completion_request(body, server.options)
            return await server._run(
                key,
                body.n * num_prompts(body.prompt),
                lambda ticket: create_completion(server, request, body, key, ticket),
            )

        @app.post("/tokenize")
        async def tokenize(request: Request) -> Response:
            """Token ids of a text ``prompt`` or of chat ``messages``."""
            server._auth(request)
            body = await server._parse(request, TokenizeRequest)
            server._check_model(body.model)
            engine = server.engine
            if (body.prompt is None) == (body.messages is None):
                raise APIError("give exactly one of prompt or messages", param="prompt")
            if body.messages is not None:
                ids = server.render_chat(body)
            else:
                ids = list(
                    engine.tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
                )
            return JSONResponse(
                {"tokens": ids, "count": len(ids), "max_model_len": engine.max_model_len}
            )

        @app.post("/detokenize")
        async def detokenize(request: Request) -> Response:
            """The text of token ids."""
            server._auth(request)
            body = await server._parse(request, DetokenizeRequest)
            server._check_model(body.model)
            vocab = server.engine.model.vocab_size
            bad = [t for t in body.tokens if not 0 <= t < vocab]
            if bad:
                raise APIError(
                    f"tokens {bad[:5]} are outside the vocabulary [0, {vocab})", param="tokens"
                )
            return JSONResponse({"prompt": server.engine.tokenizer.decode(body.tokens)})

        return app

    def _check_fields(self, body: Any) -> None:
        check_sampling_fields(
            body, self.options, self.engine.model.vocab_size, self.engine.max_model_len
        )

    async def _settle_engine_requests(self, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Before the event loop closes: abort this server's engine requests and wait until
        the engine has delivered their last outputs (delivering to a closed loop would
        raise inside the engine's thread)."""
        self.admission.abort_all()
        deadline = time.monotonic() + timeout_s
        while self.engine.is_alive and time.monotonic() < deadline:
            held = [rid for rid in self.engine.tracked_request_ids() if self.id_tag in rid]
            if not held:
                return
            for request_id in held:
                self.engine.abort(request_id)
            await asyncio.sleep(0.02)

    async def _watch(self) -> None:
        """Sample engine progress so /health can tell a stall from an idle engine."""
        while True:
            self.watchdog.sample()
            await asyncio.sleep(self.options.watchdog_interval_s)


def _chain(first: Callable[[], None] | None, second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        try:
            if first is not None:
                first()
        finally:
            second()

    return both
