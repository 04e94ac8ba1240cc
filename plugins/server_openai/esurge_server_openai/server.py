"""``eSurgeApiServer``: the FastAPI application around one engine, with API keys."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from esurge_core.engine.outputs import RequestOutput
from esurge_core.version import __version__
from esurge_server_openai.auth import ApiKeyRecord, ApiKeyStore, KeyUsage, authenticate
from esurge_server_openai.chat import create_chat_completion
from esurge_server_openai.completions import create_completion
from esurge_server_openai.errors import APIError, install_error_handlers, validation_error
from esurge_server_openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)

ModelT = TypeVar("ModelT", bound=BaseModel)


class eSurgeApiServer:
    """An OpenAI-compatible HTTP server for ``engine``.

    Args:
        engine: a running ``eSurge``.
        require_api_key: every route except ``/health`` answers 401 without a valid key.
        api_keys: ``{key: {"label": name}}`` accepted from the start; only their sha256
            digests are kept. A key's label salts the prefix cache of its requests.
    """

    def __init__(
        self,
        engine: Any,
        require_api_key: bool = False,
        api_keys: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.engine = engine
        self.require_api_key = require_api_key
        self.keys = ApiKeyStore(api_keys)
        self.model_name = str(engine.model_name)
        self.created = int(time.time())
        self.app = self._build_app()

    # ------------------------------------------------------------------ keys

    def generate_api_key(self, label: str | None = None) -> str:
        """A new random key, accepted from now on; the only time its plaintext is seen."""
        return self.keys.generate(label)

    def revoke_api_key(self, key: str) -> bool:
        """Stop accepting ``key``; returns whether it was registered."""
        return self.keys.revoke(key)

    def usage(self) -> dict[str, KeyUsage]:
        """Requests and tokens served per key label."""
        return self.keys.usage()

    # ------------------------------------------------------------------ serving

    def fire(self, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
        """Serve until interrupted (blocks)."""
        import uvicorn

        uvicorn.run(self.app, host=host, port=port, log_level=log_level)

    def check_output(self, output: RequestOutput) -> None:
        """Raise a 500 when the engine failed the request."""
        if output.error:
            raise APIError(f"generation failed: {output.error}", status=500, type="server_error")

    def _auth(self, request: Request) -> ApiKeyRecord | None:
        return authenticate(self.keys, request, self.require_api_key)

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise APIError(
                f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                status=404,
                type="not_found_error",
                param="model",
                code="model_not_found",
            )

    def _alive(self) -> None:
        if not self.engine.is_alive:
            raise APIError("the engine is not running", status=503, type="server_error")

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="eSurge OpenAI-compatible API", version=__version__)
        install_error_handlers(app)
        server = self

        @app.get("/health")
        async def health() -> Response:
            """200 while the engine loop runs, else 503."""
            if server.engine.is_alive:
                return JSONResponse({"status": "ok"})
            return JSONResponse({"status": "dead"}, status_code=503)

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
            body = await _parse(request, ChatCompletionRequest)
            server._check_model(body.model)
            server._alive()
            return await create_chat_completion(server, request, body, key)

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            """OpenAI (legacy) text completions."""
            key = server._auth(request)
            body = await _parse(request, CompletionRequest)
            server._check_model(body.model)
            server._alive()
            return await create_completion(server, request, body, key)

        @app.post("/tokenize")
        async def tokenize(request: Request) -> Response:
            """Token ids of a text ``prompt`` or of chat ``messages``."""
            server._auth(request)
            body = await _parse(request, TokenizeRequest)
            server._check_model(body.model)
            engine = server.engine
            if (body.prompt is None) == (body.messages is None):
                raise APIError("give exactly one of prompt or messages", param="prompt")
            if body.messages is not None:
                try:
                    ids = engine.apply_chat_template(body.messages)
                except Exception as exc:
                    raise APIError(
                        f"messages could not be rendered: {exc}", param="messages"
                    ) from None
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
            body = await _parse(request, DetokenizeRequest)
            server._check_model(body.model)
            vocab = server.engine.model.vocab_size
            bad = [t for t in body.tokens if not 0 <= t < vocab]
            if bad:
                raise APIError(
                    f"tokens {bad[:5]} are outside the vocabulary [0, {vocab})", param="tokens"
                )
            return JSONResponse({"prompt": server.engine.tokenizer.decode(body.tokens)})

        return app


async def _parse(request: Request, model: type[ModelT]) -> ModelT:
    """The JSON body as ``model``; every malformed body is a 400 naming the field."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
