"""A scriptable fake of the Lunos (OpenAI-compatible) chat-completions API.

`FakeChatAPI` is a real aiohttp server on 127.0.0.1 that answers
``POST /v1/chat/completions`` (streaming over SSE or plain JSON) and ``GET /v1/models``.
What it does for each request is scripted per model with `Behaviour` objects:
a normal stream (with configurable time-to-first-token and inter-token delay),
an HTTP error status (optionally with ``Retry-After``), a connection that hangs,
a connection that dies mid-stream, a malformed SSE event, or an in-band error event.
Every chat-completions request is recorded (`RecordedRequest`) so tests can assert
on what the client sent, when, and whether it went away before the answer was complete.
For faults aimed at some conversations only, `FakeChatAPI.chooser` may pick the behaviour of each
request from what it carries; it returns None to leave the request to the per-model script.

Used by tests and benchmarks of the chat client, and by developers to run the bot
locally without the real API::

    python -m tests.fakes.chat_api [--host 127.0.0.1] [--port 8089] [--api-key K]

prints the base URL (for ``LUNOS_BASE_URL``) and serves until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

__all__ = ["Behaviour", "FakeChatAPI", "RecordedRequest", "default_reply", "main"]

BehaviourKind = Literal["stream", "status", "hang", "die", "garbage", "inband_error"]

_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass
class Behaviour:
    """What the fake does for one request to a model.

    kinds:
      * ``"stream"``: answer normally (SSE when the request has ``stream: true``, else JSON).
      * ``"status"``: answer with HTTP ``status`` and an OpenAI-style error body; ``retry_after``
        adds a ``Retry-After`` header. ``error_message`` overrides the error message.
      * ``"hang"``: send the response headers (200, ``text/event-stream`` for streaming requests,
        ``application/json`` otherwise) and then nothing until the client goes away (or `stop()`).
      * ``"die"``: send ``die_after_chars`` characters of the reply, then drop the TCP connection
        (no finish_reason, no ``[DONE]``, incomplete chunked body). For a non-streaming request:
        headers and a truncated JSON body, then the drop.
      * ``"garbage"``: after ``die_after_chars`` characters of the reply send the line
        ``data: {not json``, then carry on with the rest of the stream as normal. For a
        non-streaming request: a 200 whose body is ``{not json``.
      * ``"inband_error"``: send ``die_after_chars`` characters of the reply, then
        ``data: {"error": {...}}`` and end the response (no ``[DONE]``). For a non-streaming
        request: a 200 whose body is ``{"error": {...}}``.

    The first event of every stream carries ``delta: {"role": "assistant", "content": ...}`` and
    is sent ``ttft_s`` after the response headers, which are sent at once.

    ``reasoning`` makes the model think first: that text is streamed before the reply in the delta
    field ``reasoning_field``, in ``chunk_chars`` pieces at the reply's pace, for every kind but
    ``"status"`` and ``"hang"``. DeepSeek sends ``reasoning_content`` with ``content: null`` and then
    the reply with ``reasoning_content: null``
    (https://api-docs.deepseek.com/guides/reasoning_model); OpenRouter sends ``reasoning`` beside
    ``content: ""`` (https://openrouter.ai/docs/guides/best-practices/reasoning-tokens). A
    non-streaming answer carries it in ``message`` under the same field. Reasoning written into
    the reply itself (``<think>…</think>``) is just ``text``.
    """

    kind: BehaviourKind = "stream"
    text: str | None = None
    ttft_s: float = 0.0
    token_delay_s: float = 0.0
    chunk_chars: int = 4
    status: int = 500
    retry_after: float | None = None
    die_after_chars: int = 0
    finish_reason: str = "stop"
    include_usage: bool = True
    reported_model: str | None = None
    error_message: str | None = None
    # > 0: while waiting `ttft_s`, send a role-only chunk and then an SSE comment this often, as
    # real servers do; they must not count as the first token.
    keepalive_s: float = 0.0
    reasoning: str = ""
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"


class _HeaderDict(dict[str, str]):
    """A plain dict of request headers with lower-cased keys and case-insensitive lookup."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    """One chat-completions request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    model: str | None
    at: float
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    client_disconnected: bool = False
    behaviour: Behaviour | None = None
    status: int | None = None


@dataclass
class _Exchange:
    """Server-side state of one request while its handler runs."""

    record: RecordedRequest
    response: web.StreamResponse | None = None
    counted_open: bool = False
    server_dropped: bool = False


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def _messages(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    if body is None:
        return []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict)]


def default_reply(body: dict[str, Any] | None) -> str:
    """The deterministic reply used when `Behaviour.text` is None.

    It reveals what the fake saw, so a human chatting can tell the bot keeps its memory.
    """
    messages = _messages(body)
    if messages and messages[-1].get("role") == "assistant":
        return " (continued)"
    user_messages = [m for m in messages if m.get("role") == "user"]
    last_user = _content_text(user_messages[-1].get("content")) if user_messages else ""
    return f"You said: {last_user}. (I have seen {len(user_messages)} user messages in this conversation.)"


def _usage(body: dict[str, Any] | None, text: str) -> dict[str, int]:
    prompt_chars = sum(len(_content_text(m.get("content"))) for m in _messages(body))
    prompt_tokens = prompt_chars // 4 + 1
    completion_tokens = len(text) // 4 + 1
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _error_body(message: str, type_: str, code: int | str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code}}


def _error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


class FakeChatAPI:
    """A real HTTP server speaking the Lunos chat-completions protocol, scriptable per model."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] = ("test/model-a", "test/model-b", "test/model-c"),
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 128,  # aiohttp's default; a benchmark's burst of 1,000 connections wants more
    ) -> None:
        self.api_key = api_key
        self.models: list[str] = list(models)
        self.host = host
        self.port = port
        self.backlog = backlog
        self.base_url = ""
        self.default_behaviour = Behaviour()
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Behaviour]] = {}
        # Sees each valid request (recorded, with its model) before the script does; a Behaviour it
        # returns is used for that request, None leaves the request to `script` / `default_behaviour`.
        self.chooser: Callable[[RecordedRequest], Behaviour | None] | None = None
        self._runner: web.AppRunner | None = None
        self._arrived: asyncio.Condition | None = None
        self._active: dict[asyncio.Task[Any], _Exchange] = {}
        self._open_streams = 0
        self._stopping = False
        self._ids = itertools.count(1)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Start serving; returns the base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._runner is not None:
            return self.base_url
        self._stopping = False
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_get("/v1/models", self._handle_models)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=self.backlog)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.port = int(port)
        self.base_url = f"http://{host}:{self.port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving. Open streams (including hanging ones) are cut off, so this never hangs."""
        runner = self._runner
        if runner is None:
            return
        self._stopping = True
        tasks = [task for task in self._active if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        await runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> FakeChatAPI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- scripting & inspection

    def script(self, model: str, *behaviours: Behaviour) -> None:
        """Queue behaviours for ``model``: each request takes the next; the last one repeats.

        Replaces any earlier script for the model; with no behaviours the model goes back to
        `default_behaviour`.
        """
        if behaviours:
            self._scripts[model] = deque(behaviours)
        else:
            self._scripts.pop(model, None)

    def _next_behaviour(self, model: str | None) -> Behaviour:
        queue = self._scripts.get(model) if model is not None else None
        if not queue:
            return self.default_behaviour
        if len(queue) > 1:
            return queue.popleft()
        return queue[0]

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """The recorded chat-completions requests for ``model``, in arrival order."""
        return [r for r in self.requests if r.model == model]

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (fixed API)
        """Wait until at least ``n`` chat-completions requests have arrived (TimeoutError if not)."""
        if len(self.requests) >= n:
            return
        if self._arrived is None:
            raise RuntimeError("FakeChatAPI is not started")
        cond = self._arrived
        try:
            async with asyncio.timeout(timeout):
                async with cond:
                    await cond.wait_for(lambda: len(self.requests) >= n)
        except TimeoutError:
            raise TimeoutError(
                f"expected {n} chat-completions requests within {timeout}s, got {len(self.requests)}"
            ) from None

    @property
    def open_streams(self) -> int:
        """Responses whose headers have been sent and whose handler has not finished yet."""
        return self._open_streams

    # ----------------------------------------------------------------- handlers

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def _unauthorized(self) -> web.Response:
        return web.json_response(
            _error_body("Invalid or missing API key", "authentication_error", 401), status=401
        )

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        raw = await request.read()
        body: dict[str, Any] | None
        try:
            parsed = json.loads(raw) if raw else None
            body = parsed if isinstance(parsed, dict) else None
        except ValueError:
            body = None
        model = body.get("model") if body is not None else None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=_HeaderDict((k.lower(), v) for k, v in request.headers.items()),
            body=body,
            model=model if isinstance(model, str) else None,
            at=at,
        )
        exchange = _Exchange(record=record)
        task = asyncio.current_task()
        if task is not None:
            self._active[task] = exchange
        self.requests.append(record)
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        try:
            response = await self._serve(request, exchange)
            record.status = response.status
            return response
        except asyncio.CancelledError:
            if not self._stopping and not exchange.server_dropped:
                record.client_disconnected = True
            raise
        except ConnectionError:
            # Writing to a connection the peer closed. Hand aiohttp the response we were
            # writing: its own write_eof fails quietly the same way.
            if not exchange.server_dropped:
                record.client_disconnected = True
            if exchange.response is None:
                raise
            record.status = exchange.response.status
            return exchange.response
        finally:
            if record.status is None and exchange.response is not None:
                record.status = exchange.response.status
            if exchange.counted_open:
                self._open_streams -= 1
            if task is not None:
                self._active.pop(task, None)
            record.finished.set()

    async def _prepare(
        self, request: web.Request, exchange: _Exchange, content_type: str, length: int | None = None
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = content_type
        if content_type == "text/event-stream":
            response.headers["Cache-Control"] = "no-cache"
        if length is not None:
            response.content_length = length
        exchange.response = response
        await response.prepare(request)
        exchange.counted_open = True
        self._open_streams += 1
        return response

    def _drop_connection(self, request: web.Request, exchange: _Exchange) -> None:
        exchange.server_dropped = True
        transport = request.transport
        if transport is not None:
            transport.close()

    async def _serve(self, request: web.Request, exchange: _Exchange) -> web.StreamResponse:
        record = exchange.record
        if not self._authorized(request):
            return self._unauthorized()
        body = record.body
        if body is None:
            return web.json_response(
                _error_body("Request body must be a JSON object", "invalid_request_error", 400), status=400
            )
        if record.model is None:
            return web.json_response(
                _error_body("'model' is required", "invalid_request_error", 400), status=400
            )
        chosen = self.chooser(record) if self.chooser is not None else None
        behaviour = chosen if chosen is not None else self._next_behaviour(record.model)
        record.behaviour = behaviour

        if behaviour.kind == "status":
            return self._status_response(behaviour)
        text = behaviour.text if behaviour.text is not None else default_reply(body)
        answering_model = behaviour.reported_model or record.model
        if body.get("stream") is True:
            stream_options = body.get("stream_options")
            wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
            return await self._stream(request, exchange, behaviour, text, answering_model, wants_usage)
        return await self._complete(request, exchange, behaviour, text, answering_model)

    def _status_response(self, behaviour: Behaviour) -> web.Response:
        status = behaviour.status
        message = behaviour.error_message or f"Simulated upstream error (HTTP {status})"
        headers: dict[str, str] = {}
        if behaviour.retry_after is not None:
            headers["Retry-After"] = _format_retry_after(behaviour.retry_after)
        return web.json_response(
            _error_body(message, _error_type(status), status), status=status, headers=headers
        )

    async def _complete(
        self,
        request: web.Request,
        exchange: _Exchange,
        behaviour: Behaviour,
        text: str,
        model: str,
    ) -> web.StreamResponse:
        body = exchange.record.body
        kind = behaviour.kind
        if kind == "hang":
            await self._prepare(request, exchange, "application/json")
            await asyncio.get_running_loop().create_future()
        await _pause(behaviour.ttft_s)
        if kind == "garbage":
            return web.Response(status=200, text="{not json", content_type="application/json")
        if kind == "inband_error":
            message = behaviour.error_message or "Simulated upstream error"
            return web.json_response(_error_body(message, "server_error", 500))
        chunk_count = max(1, -(-len(text) // max(1, behaviour.chunk_chars)))
        await _pause(behaviour.token_delay_s * (chunk_count - 1))
        payload: dict[str, Any] = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": behaviour.finish_reason,
                }
            ],
        }
        if behaviour.reasoning:
            payload["choices"][0]["message"][behaviour.reasoning_field] = behaviour.reasoning
        if behaviour.include_usage:
            payload["usage"] = _usage(body, behaviour.reasoning + text)  # reasoning tokens are billed
        encoded = json.dumps(payload).encode()
        if kind == "die":
            response = await self._prepare(request, exchange, "application/json", length=len(encoded))
            await response.write(encoded[: max(1, len(encoded) // 2)])
            self._drop_connection(request, exchange)
            return response
        return web.Response(status=200, body=encoded, content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        exchange: _Exchange,
        behaviour: Behaviour,
        text: str,
        model: str,
        wants_usage: bool,
    ) -> web.StreamResponse:
        response = await self._prepare(request, exchange, "text/event-stream")
        if behaviour.kind == "hang":
            await asyncio.get_running_loop().create_future()
        completion_id = f"chatcmpl-fake-{next(self._ids)}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }
            )

        kind = behaviour.kind
        cut = len(text) if kind == "stream" else min(max(0, behaviour.die_after_chars), len(text))
        size = max(1, behaviour.chunk_chars)
        begun = False
        role_sent = False

        async def keep_alive_until_first_token() -> None:
            waited = 0.0
            await response.write(chunk({"role": "assistant"}))
            while waited + behaviour.keepalive_s < behaviour.ttft_s:
                await _pause(behaviour.keepalive_s)
                waited += behaviour.keepalive_s
                await response.write(b": keep-alive\n\n")
            await _pause(behaviour.ttft_s - waited)

        async def send(event: bytes) -> None:
            # Time to first token, then the inter-chunk delay before every later event.
            nonlocal begun
            if not begun and behaviour.keepalive_s > 0:
                await keep_alive_until_first_token()
            else:
                await _pause(behaviour.token_delay_s if begun else behaviour.ttft_s)
            begun = True
            await response.write(event)

        # DeepSeek's answer deltas name the reasoning field as null once reasoning is over.
        after_reasoning: dict[str, Any] = (
            {"reasoning_content": None}
            if behaviour.reasoning and behaviour.reasoning_field == "reasoning_content" else {}
        )

        async def send_delta(delta: dict[str, Any]) -> None:
            nonlocal role_sent
            await send(chunk(delta if role_sent else {"role": "assistant", **delta}))
            role_sent = True

        async def send_reasoning() -> None:
            blank = None if behaviour.reasoning_field == "reasoning_content" else ""
            for start in range(0, len(behaviour.reasoning), size):
                piece = behaviour.reasoning[start : start + size]
                await send_delta({"content": blank, behaviour.reasoning_field: piece})

        async def send_text(part: str) -> None:
            for start in range(0, len(part), size):
                await send_delta({"content": part[start : start + size], **after_reasoning})

        await send_reasoning()
        await send_text(text[:cut])
        if kind == "die":
            if not begun:
                await _pause(behaviour.ttft_s)
            self._drop_connection(request, exchange)
            return response
        if kind == "inband_error":
            message = behaviour.error_message or "Simulated upstream error"
            await send(_sse(_error_body(message, "server_error", 500)))
            await response.write_eof()
            return response
        if kind == "garbage":
            await send(b"data: {not json\n\n")
            await send_text(text[cut:])
        if not role_sent:
            await send(chunk({"role": "assistant", "content": ""}))
        await response.write(chunk({}, behaviour.finish_reason))
        if wants_usage and behaviour.include_usage:
            await response.write(
                _sse(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(exchange.record.body, behaviour.reasoning + text),
                    }
                )
            )
        await response.write(_sse("[DONE]"))
        await response.write_eof()
        return response


# --------------------------------------------------------------------------- command line


async def _serve_forever(args: argparse.Namespace) -> None:
    api = FakeChatAPI(api_key=args.api_key, host=args.host, port=args.port)
    api.default_behaviour = Behaviour(ttft_s=args.ttft, token_delay_s=args.token_delay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with api:
        print(api.base_url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake in the foreground until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.chat_api",
        description="Fake Lunos chat-completions API; prints its base URL (use it as LUNOS_BASE_URL).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--api-key", default=None, help="require this Bearer key (default: accept any)")
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between chunks")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
