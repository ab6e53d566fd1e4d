"""`ChatClient`: the Lunos (OpenAI-compatible) chat-completions API, streamed, with fallback.

One pooled `httpx.AsyncClient` per process, shared by every bot; each request names its bot with
`X-App-ID`. httpx and httpx-sse errors are translated here into `core.errors`; nothing above this
module sees an httpx exception. This module must not know about sinks, history or platforms.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from httpx_sse import EventSource, SSEError

from core.errors import (
    AllModelsFailed,
    AuthenticationFailed,
    ChatAPIError,
    ChatTimeout,
    EndpointNotFound,
    FailedAttempt,
    ModelNotFound,
    ModelUnavailable,
    OutOfCredits,
    RateLimited,
    RequestRejected,
)
from core.reasoning import ThinkFilter
from core.types import ChatMessage, ChatRequest, ChatResult, Usage

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.lunos.tech/v1"
# Sent with the partial answer when a stream died and the next model is asked to carry on.
CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "without repeating anything and without any preamble."
)
# The request is wrong and another model won't help — except a 400/404 that names the model, which
# is an unknown model id (`ModelNotFound`): the chain exists for exactly that.
NO_FALLBACK_STATUSES = frozenset({400, 401, 402, 403, 404})
MODEL_ERROR_CODES = frozenset({"model_not_found", "invalid_model", "model_not_available"})
RETRYABLE_STATUSES = frozenset({408, 409, 429})  # plus every 5xx
READ_TIMEOUT_MARGIN_S = 1.0  # so the asyncio deadline, with its clearer error, fires first
# One connection per streaming reply: the process carries 1,000 concurrent replies (make bench);
# past this many, a request waits for a free connection within its first-token deadline.
CHAT_MAX_CONNECTIONS = 1_000
CHAT_MAX_KEEPALIVE_CONNECTIONS = 100  # idle connections kept for the next burst
WRITE_TIMEOUT_S = 10.0  # sending a request body; generous, bodies are small
MAX_ERROR_TEXT_CHARS = 300  # of an API error message kept in our own errors and logs
# Delta fields that carry a model's reasoning apart from its answer: DeepSeek's `reasoning_content`
# (api-docs.deepseek.com/guides/reasoning_model), OpenRouter's `reasoning`
# (openrouter.ai/docs/guides/best-practices/reasoning-tokens). Never answer text: read for liveness.
REASONING_FIELDS = ("reasoning_content", "reasoning")

DeltaCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ChatTimeouts:
    """Deadlines of one reply. httpx's read timeout cannot express time-to-first-token (role
    chunks and keep-alives arrive before any text), so that one is measured with asyncio.

    Reasoning counts as the model being alive: the first-token deadline ends at the model's first
    output of any kind — answer text, a `reasoning` / `reasoning_content` delta, or text inside a
    `<think>` block — and from then on the gap deadline applies. So a reasoning model may think for
    longer than `first_token_s` before its first visible word, as long as it keeps streaming; its
    thinking stays inside `total_s` like everything else.
    """

    connect_s: float = 5.0
    first_token_s: float = 20.0  # from sending the request to the model's first output, reasoning included
    chunk_gap_s: float = 30.0  # longest silence between chunks once the model produces output
    total_s: float = 180.0  # the whole reply, every attempt and fallback included


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one model before moving down the fallback chain."""

    attempts_per_model: int = 2
    retry_after_cap_s: float = 10.0  # a longer Retry-After moves to the next model instead of waiting
    backoff_base_s: float = 0.5  # jittered exponential backoff when the API gave no Retry-After
    backoff_max_s: float = 4.0


@dataclass
class _AttemptOutcome:
    model: str
    finish_reason: str | None
    usage: Usage | None
    reasoning_shown: int | None = None  # `ThinkFilter.reasoning_shown` of this attempt


class ChatClient:
    """Streams chat completions across `[model, *fallback_models]`, continuing broken answers."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeouts: ChatTimeouts | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.timeouts = timeouts or ChatTimeouts()
        self.retry = retry or RetryPolicy()
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        # Models seen to stream a stray `</think>`: their chat template opens the block in the prompt.
        self._opens_think_in_prompt: set[str] = set()
        self._sleep = sleep
        self._jitter = jitter
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                connect=self.timeouts.connect_s,
                # The asyncio deadlines govern first token and gaps; httpx's read timeout is only
                # a backstop and must not cut a first token the settings still allow.
                read=max(self.timeouts.first_token_s, self.timeouts.chunk_gap_s) + READ_TIMEOUT_MARGIN_S,
                write=WRITE_TIMEOUT_S,
                # Waiting for a pooled connection is part of waiting for the first token.
                pool=self.timeouts.first_token_s,
            ),
            limits=httpx.Limits(max_connections=CHAT_MAX_CONNECTIONS,
                                max_keepalive_connections=CHAT_MAX_KEEPALIVE_CONNECTIONS),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- public API ------------------------------------------------------------------------

    async def stream(self, request: ChatRequest, on_delta: DeltaCallback) -> ChatResult:
        """Stream one reply, calling `on_delta` with each new piece of answer text. Reasoning
        (`<think>` blocks, reasoning delta fields) is never passed on nor part of the result
        (`core.reasoning`), so the first `on_delta` call is the first answer text.

        Raises `RequestRejected` (no fallback helps) or `AllModelsFailed` when no text was shown.
        Once text was shown it is never taken back: a broken stream is continued by the next model,
        and if none can, the result is returned with `interrupted=True`.
        """
        shown: list[str] = []
        failures: list[FailedAttempt] = []
        attempts = 0
        current_model = request.model
        last_writer = request.model  # the model whose text was shown last
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.total_s

        async def deliver(text: str) -> None:
            nonlocal last_writer
            last_writer = current_model
            shown.append(text)
            await on_delta(text)

        try:
            async with asyncio.timeout_at(deadline):
                chain = request.chain
                for position, model in enumerate(chain):
                    current_model = model
                    next_model = chain[position + 1] if position + 1 < len(chain) else None
                    for try_number in range(1, self.retry.attempts_per_model + 1):
                        attempts += 1
                        shown_before = len(shown)
                        messages = list(request.messages)
                        if shown:
                            messages += [
                                ChatMessage("assistant", "".join(shown)),
                                ChatMessage("user", CONTINUE_PROMPT),
                            ]
                        try:
                            outcome = await self._stream_once(
                                request, model, next_model, messages, deliver, deadline
                            )
                        except RequestRejected as exc:
                            if shown:  # a continuation was refused: keep what the user already saw
                                failures.append(FailedAttempt(model, exc))
                                break
                            if isinstance(exc, ModelNotFound) and next_model is not None:
                                failures.append(FailedAttempt(model, exc))
                                log.error(
                                    "chat.model_misconfigured", model=model, next_model=next_model,
                                    primary=position == 0, status=exc.status, api_message=exc.api_message,
                                    note=f"{model!r} is unknown to the chat API; answering with "
                                         f"{next_model!r} until the bot definition is fixed",
                                )
                                break
                            log.error("chat.rejected", model=model, status=exc.status,
                                      api_message=exc.api_message, error_type=type(exc).__name__,
                                      hint=exc.hint)
                            raise
                        except ChatAPIError as exc:
                            failures.append(FailedAttempt(model, exc))
                            log.warning(
                                "chat.attempt_failed", model=model, attempt=try_number,
                                error=str(exc), error_type=type(exc).__name__, status=exc.status,
                                api_message=exc.api_message or None,
                            )
                            wait = self._wait_before_retry(exc, try_number)
                            if wait is None or len(shown) > shown_before:
                                break  # on to the next model
                            await self._sleep(wait)
                            continue
                        text = "".join(shown)
                        answer_start = 0
                        if outcome.reasoning_shown is not None:  # before this attempt + its reasoning
                            answer_start = len(text) - len("".join(shown[shown_before:]))
                            answer_start += outcome.reasoning_shown
                        return ChatResult(
                            text=text,
                            model=outcome.model,
                            requested_model=request.model,
                            fallback_used=position > 0 or outcome.model != model,
                            attempts=attempts,
                            finish_reason=outcome.finish_reason,
                            usage=outcome.usage,
                            answer_start=answer_start,
                        )
        except TimeoutError:
            deadline_error = ChatTimeout("total deadline passed", model=current_model)
            failures.append(FailedAttempt(current_model, deadline_error))
        if shown:
            return ChatResult(
                text="".join(shown),
                model=last_writer,
                requested_model=request.model,
                fallback_used=last_writer != request.model,
                attempts=attempts,
                finish_reason=None,
                usage=None,
                interrupted=True,
            )
        raise AllModelsFailed(failures)

    async def list_models(self, *, app_id: str | None = None) -> list[str]:
        """`GET {base}/models`: the model ids the key can use. Raises a `ChatAPIError`."""
        try:
            response = await self._http.get(f"{self._base_url}/models", headers=self._headers(app_id))
        except httpx.TimeoutException as exc:
            raise ChatTimeout(f"GET /models timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ModelUnavailable(f"cannot reach {self._base_url} ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise self._status_error(response, None)
        try:
            data = response.json()
            return [str(item["id"]) for item in data.get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelUnavailable("GET /models returned an unexpected body") from exc

    # -- one attempt -----------------------------------------------------------------------

    def _headers(self, app_id: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "text/event-stream"}
        if app_id:
            headers["X-App-ID"] = app_id
        return headers

    async def _stream_once(
        self,
        request: ChatRequest,
        model: str,
        next_model: str | None,
        messages: Sequence[ChatMessage],
        deliver: DeltaCallback,
        deadline: float,
    ) -> _AttemptOutcome:
        body: dict[str, Any] = {
            "model": model,
            "messages": [m.as_api() for m in messages],
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if next_model is not None:
            body["fallback_model"] = next_model
        loop = asyncio.get_running_loop()
        # One filter per attempt: a continuation (`stream` appended the shown text and
        # CONTINUE_PROMPT to the request's messages) keeps the space before its first word.
        continuing = len(messages) > len(request.messages)
        answer = ThinkFilter(continuing=continuing,
                             opened=not continuing and model in self._opens_think_in_prompt)
        producing = False  # the model has output something: answer text or reasoning
        finish_reason: str | None = None
        usage: Usage | None = None
        answered_by = model
        done = False
        try:
            async with asyncio.timeout(self.timeouts.first_token_s) as deadline_cm:
                async with self._http.stream(
                    "POST", f"{self._base_url}/chat/completions", json=body,
                    headers=self._headers(request.app_id),
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise self._status_error(response, model)
                    async for event in EventSource(response).aiter_sse():
                        if producing:
                            deadline_cm.reschedule(min(deadline, loop.time() + self.timeouts.chunk_gap_s))
                        if event.data.strip() == "[DONE]":
                            done = True
                            if tail := answer.flush(release_opened=finish_reason != "length"):
                                await deliver(tail)
                            self._learn_template(model, answer)
                            break
                        chunk = _parse_chunk(event.data, model)
                        answered_by = str(chunk.get("model") or answered_by)
                        usage = _parse_usage(chunk.get("usage")) or usage
                        for choice in chunk.get("choices") or []:
                            if not isinstance(choice, dict):
                                continue
                            content, reasoned = _delta_parts(choice)
                            if (content or reasoned) and not producing:
                                # Reasoning is liveness: from here the gap deadline applies.
                                producing = True
                                deadline_cm.reschedule(
                                    min(deadline, loop.time() + self.timeouts.chunk_gap_s)
                                )
                            if reasoned:
                                answer.mark_reasoning()
                            if content and (visible := answer.feed(content)):
                                await deliver(visible)
                            if choice.get("finish_reason"):
                                finish_reason = str(choice["finish_reason"])
        except TimeoutError as exc:
            phase = "gap between chunks" if producing else "first token"
            raise ChatTimeout(f"{model}: no {phase} in time", model=model) from exc
        except httpx.TimeoutException as exc:
            raise ChatTimeout(f"{model}: {type(exc).__name__}", model=model) from exc
        except httpx.TransportError as exc:
            raise ModelUnavailable(f"{model}: connection failed ({type(exc).__name__})", model=model) from exc
        except SSEError as exc:
            raise ModelUnavailable(f"{model}: not an event stream ({exc})", model=model) from exc
        if not done:
            raise ModelUnavailable(f"{model}: stream ended without [DONE]", model=model)
        if finish_reason is None:
            raise ModelUnavailable(f"{model}: stream ended without a finish_reason", model=model)
        return _AttemptOutcome(model=answered_by, finish_reason=finish_reason, usage=usage,
                               reasoning_shown=answer.reasoning_shown)

    def _learn_template(self, model: str, answer: ThinkFilter) -> None:
        """Remember models whose template opens `<think>` in the prompt (a stray `</think>` came),
        so their next answers start inside the block and their reasoning is never shown; forget one
        that then answered without it."""
        if answer.reasoning_shown is not None and model not in self._opens_think_in_prompt:
            self._opens_think_in_prompt.add(model)
            log.warning("chat.reasoning_opened_in_prompt", model=model,
                        note="this answer showed reasoning before </think>; later ones hide it")
        elif answer.opened and not answer.closed_opened:
            self._opens_think_in_prompt.discard(model)

    def _wait_before_retry(self, exc: ChatAPIError, try_number: int) -> float | None:
        """Seconds to wait before trying the same model again, or None to move on."""
        if try_number >= self.retry.attempts_per_model or isinstance(exc, ChatTimeout):
            return None  # a model that hung will likely hang again: next one
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self.retry.retry_after_cap_s else None
        backoff = min(self.retry.backoff_max_s, self.retry.backoff_base_s * 2.0 ** (try_number - 1))
        return backoff * (0.5 + self._jitter())

    def _status_error(self, response: httpx.Response, model: str | None) -> ChatAPIError:
        status = response.status_code
        detail, code, param = _error_fields(response)
        text = f"{model or 'API'}: HTTP {status}{': ' + detail if detail else ''}"
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if status == 429:
            return RateLimited(text, model=model, status=status, retry_after=retry_after, api_message=detail)
        if status in RETRYABLE_STATUSES or status >= 500:
            return ModelUnavailable(text, model=model, status=status, retry_after=retry_after,
                                    api_message=detail)
        kind: type[RequestRejected] = RequestRejected
        if status in (401, 403):
            kind = AuthenticationFailed
        elif status == 402:
            kind = OutOfCredits
        elif status in (400, 404) and model is not None and _names_the_model(
                detail, code, param, model, status):
            kind = ModelNotFound
        elif status == 404:
            kind = EndpointNotFound
            text = f"{text} (at {response.request.url.copy_with(query=None)})"
        return kind(text, model=model, status=status, api_message=detail)


def _parse_chunk(data: str, model: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ModelUnavailable(f"{model}: unparseable stream event", model=model) from exc
    if not isinstance(chunk, dict):
        raise ModelUnavailable(f"{model}: unexpected stream event", model=model)
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        text = f"{model}: error in stream: {str(message)[:MAX_ERROR_TEXT_CHARS]}"
        if code in (429, "429", "rate_limit_exceeded"):
            raise RateLimited(text, model=model)
        raise ModelUnavailable(text, model=model)
    return chunk


def _delta_parts(choice: dict[str, Any]) -> tuple[str, bool]:
    """(content text, whether reasoning came) of one streamed choice. The reasoning text itself is
    dropped here: it is never shown, never saved."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return "", False
    content = delta.get("content")
    reasoned = any(isinstance(delta.get(field), str) and delta[field] for field in REASONING_FIELDS)
    return (content if isinstance(content, str) else ""), reasoned


def _parse_usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt_tokens=prompt, completion_tokens=completion)
    return None


def _error_fields(response: httpx.Response) -> tuple[str, str, str]:
    """(message, code, param) of an OpenAI-style error body; the raw text when it is not one."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:MAX_ERROR_TEXT_CHARS].strip(), "", ""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return (str(error.get("message") or "")[:MAX_ERROR_TEXT_CHARS], str(error.get("code") or ""),
                    str(error.get("param") or ""))
        if isinstance(error, str):
            return error[:MAX_ERROR_TEXT_CHARS], "", ""
        if isinstance(data.get("message"), str):
            return str(data["message"])[:MAX_ERROR_TEXT_CHARS], "", ""
    return "", "", ""


def _names_the_model(message: str, code: str, param: str, model: str, status: int) -> bool:
    """Whether a 400/404 is about the model id rather than the request or the URL. A 400 must name
    the model itself (a 400 about the context length also says "model"); a 404 may just say it."""
    if code.lower() in MODEL_ERROR_CODES or param == "model" or model.lower() in message.lower():
        return True
    return status == 404 and "model" in message.lower()


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds: float = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds)
