"""``RequestGuard``: the ASGI layer in front of every route.

It answers before any route code or JSON parsing runs:

* 431 when the request headers together are larger than ``max_header_bytes``;
* 413 when a body is larger than ``max_body_bytes`` (from ``Content-Length`` at once, or while
  reading a chunked body, never buffering more than the limit);
* 415 when a ``POST`` declares a content type other than JSON;
* a 500 in OpenAI's shape for an unexpected exception of one request, which is logged and
  contained here (uvicorn would otherwise drop the connection after re-raising it);
* and it moves an ``?api_key=`` out of the query string (into ``scope["esurge.api_key"]``),
  leaving ``api_key=REDACTED`` behind, so access logs never carry the key.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from esurge_server_openai.errors import error_body

logger = logging.getLogger(__name__)

#: Scope key under which the guard leaves a key that came in the query string.
SCOPE_API_KEY = "esurge.api_key"
#: What replaces a query-string key.
REDACTED = "REDACTED"


class RequestGuard:
    """Size, content-type and key-redaction checks for ``app`` (pure ASGI)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        redact_query_key(scope)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._guarded(scope, receive, tracking_send)
        except Exception as exc:
            logger.exception("unhandled error serving %r", scope.get("path"))
            if not started:
                await _reply(
                    send,
                    500,
                    f"internal server error ({type(exc).__name__})",
                    None,
                    kind="server_error",
                )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if header_bytes > self.max_header_bytes:
            message = (
                f"the request headers ({header_bytes} bytes) are larger than the limit of "
                f"{self.max_header_bytes} bytes"
            )
            await _reply(send, 431, message, None)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json"):
            await _reply(
                send, 415, f"unsupported content type {media!r}; send application/json", "body"
            )
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _reply(send, 413, self._too_large(declared), "body")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reply(send, 413, self._too_large(f"more than {size}"), "body")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    def _too_large(self, size: str) -> str:
        return (
            f"the request body ({size} bytes) is larger than the limit of "
            f"{self.max_body_bytes} bytes"
        )


def redact_query_key(scope: Scope) -> None:
    """Move ``api_key`` out of ``scope["query_string"]`` (in place, before any logging)."""
    raw: bytes = scope.get("query_string", b"")
    if b"api_key" not in raw:
        return
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    kept = []
    for name, value in pairs:
        if name == "api_key":
            scope[SCOPE_API_KEY] = value
            value = REDACTED
        kept.append((name, value))
    scope["query_string"] = urlencode(kept).encode("latin-1")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for http.disconnect

    return replay


async def _reply(
    send: Send, status: int, message: str, param: str | None, kind: str = "invalid_request_error"
) -> None:
    payload: Any = error_body(message, kind, param)
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
