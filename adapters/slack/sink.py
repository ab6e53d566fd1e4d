"""`SlackReplySink`: one reply in a Slack thread or DM, growing by paced `chat.update` edits or by
Slack's native streaming (`chat.startStream` / `appendStream` / `stopStream`).

Slack's budgets are per method, so each step of a reply spends a different one and the first text
never waits behind other replies' edits: the working signal is a reaction on the user's message (or,
in an assistant thread, `assistant.threads.setStatus`), the first text is the `chat.postMessage`, and
only later growth draws on the workspace's shared `chat.update` budget (`pacing.WorkspacePacer`).
In-progress edits that would wait too long are skipped; posts and final edits always land, retried
after Slack's `Retry-After` (slack-sdk's retry handler first, then here). Text goes out as
`markdown_text`, which Slack renders as standard Markdown. Slack errors become `PlatformError` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack.pacing import WorkspacePacer
from adapters.slack.translate import ReplyTarget
from core.errors import PlatformError
from core.ports import RenderLimits
from core.types import ReplyInfo

log = structlog.get_logger(__name__)

SLACK_MAX_CHARS = 4000  # chat.update rejects longer text with msg_too_long
SLACK_SPLIT_CHARS = 3500  # continue in a new message past this: room for a closing fence and the indicator
SLACK_MIN_EDIT_INTERVAL_S = 1.0  # chat.update is Tier 3 (~50/min per workspace): ≤ 1 edit/s per message
STREAMING_INDICATOR = " ▍"  # shows the answer is still growing; gone from the final text
WORKING_REACTION = "eyes"  # on the user's message while the bot works
ASSISTANT_STATUS = "is thinking…"  # assistant threads show this under the thread instead
SIGNAL_TIMEOUT_S = 3.0  # the working signal is best effort: never worth holding a reply up
MUST_LAND_ATTEMPTS = 5  # tries of a post or a final edit, each after Retry-After or a backoff
RETRY_BACKOFF_S = 0.5  # first backoff when Slack gave no Retry-After; doubles per attempt
RETRY_BACKOFF_MAX_S = 8.0
# Slack errors worth another try of a call that must land; anything else would fail again.
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})
STREAM_NOT_ACTIVE = "message_not_in_streaming_state"  # a native stream expired (~5 min) or was stopped
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError)  # Slack unreachable or too slow, as slack-sdk raises it

WorkingSignal = Literal["reaction", "status"]


def edit_limits(min_edit_interval_s: float = SLACK_MIN_EDIT_INTERVAL_S) -> RenderLimits:
    """Replies grown by `chat.update`: each update replaces the whole text."""
    return RenderLimits(
        max_chars=SLACK_MAX_CHARS, split_chars=SLACK_SPLIT_CHARS, min_edit_interval_s=min_edit_interval_s,
        placeholder=None,  # the reaction is the working signal; the first text is the post
        streaming_indicator=STREAMING_INDICATOR,
    )


def native_limits(min_edit_interval_s: float = SLACK_MIN_EDIT_INTERVAL_S) -> RenderLimits:
    """Replies streamed natively: a stream only appends, so nothing shown may be taken back later
    (no indicator, no provisional closing fence)."""
    return RenderLimits(
        max_chars=SLACK_MAX_CHARS, split_chars=SLACK_SPLIT_CHARS, min_edit_interval_s=min_edit_interval_s,
        placeholder=None, streaming_indicator="", close_open_fences=False,
    )


def error_code(exc: Exception) -> str:
    """Slack's error string (`ratelimited`, `msg_too_long`…), the HTTP status when there is none, or
    the exception's type for a network error."""
    if not isinstance(exc, SlackApiError):
        return type(exc).__name__
    response = exc.response
    code = response.get("error") if response is not None else None
    return str(code) if code else f"http_{getattr(response, 'status_code', 'unknown')}"


def _retry_after(exc: SlackApiError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    for name, value in headers.items():
        if str(name).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


def _transient(exc: SlackApiError) -> bool:
    status = getattr(exc.response, "status_code", 200)
    return status == 429 or status >= 500 or error_code(exc) in TRANSIENT_ERRORS


class SlackReplySink:
    """Implements `core.ports.ReplySink` for one reply. Not shared between replies."""

    def __init__(
        self,
        target: ReplyTarget,
        *,
        client: AsyncWebClient,
        signal_client: AsyncWebClient,
        pacer: WorkspacePacer,
        native: bool = False,
        min_edit_interval_s: float = SLACK_MIN_EDIT_INTERVAL_S,
    ) -> None:
        self._target = target
        self._client = client  # retries 429s itself (Retry-After), for calls that must land
        self._signal_client = signal_client  # no retries: a late working signal is worthless
        self._pacer = pacer
        # Native streams are replies to a message: a DM answered in place has no thread to stream into.
        self._native = native and target.thread_ts is not None
        limits_for = native_limits if self._native else edit_limits
        self._limits = limits_for(min_edit_interval_s)
        self._streams: dict[str, str] = {}  # ts → text appended so far, for messages still streaming
        self._signal: asyncio.Task[WorkingSignal | None] | None = None
        self.shed_edits = 0  # in-progress edits skipped because the workspace budget was queued up
        self.stream_fallbacks = 0  # native streams that fell back to edits

    @property
    def limits(self) -> RenderLimits:
        return self._limits

    @property
    def native(self) -> bool:
        """Whether this reply still streams natively (False once it fell back to edits)."""
        return self._native

    async def start(self) -> None:
        # In the background: the model request should not wait for the reaction's round trip.
        self._signal = asyncio.create_task(self._show_working(), name="slack-working-signal")

    async def post(self, text: str) -> str:
        if self._native:
            ts = await self._start_stream(text)
            if ts is not None:
                return ts
        target = self._target
        response = await self._must_land("chat.postMessage", lambda: self._client.chat_postMessage(
            channel=target.channel, thread_ts=target.thread_ts, markdown_text=text,
        ))
        return str(response["ts"])

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        if ref in self._streams and await self._stream(ref, text, final=final):
            return
        if final:
            await self._must_land("chat.update", lambda: self._update(ref, text), paced=True)
            return
        if not await self._pacer.wait_for_turn("chat.update", must_land=False):
            self.shed_edits += 1
            return
        try:
            await self._update(ref, text)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            raise PlatformError(f"chat.update: {error_code(exc)}") from exc

    async def finish(self) -> None:
        if self.shed_edits or self.stream_fallbacks:
            log.info("slack.reply_paced", shed_edits=self.shed_edits, stream_fallbacks=self.stream_fallbacks)
        shown = await self._signal if self._signal is not None else None
        for ts in list(self._streams):
            await self._stop_stream_quietly(ts)
        target = self._target
        if shown == "reaction":
            try:
                await self._must_land("reactions.remove", lambda: self._client.reactions_remove(
                    channel=target.channel, timestamp=target.source_ts, name=WORKING_REACTION,
                ))
            except PlatformError as exc:
                log.warning("slack.reaction_not_removed", error=str(exc))
        elif shown == "status" and target.thread_ts is not None:
            # Slack clears the status when the bot replies; clearing it again covers a failed reply.
            try:
                await asyncio.wait_for(self._signal_client.assistant_threads_setStatus(
                    channel_id=target.channel, thread_ts=target.thread_ts, status="",
                ), SIGNAL_TIMEOUT_S)
            except (SlackApiError, *NETWORK_ERRORS) as exc:
                log.info("slack.status_not_cleared", error=error_code(exc))

    def footer(self, info: ReplyInfo) -> str | None:
        return f"_(answered by {info.model})_" if info.fallback_used else None

    # -- internals -------------------------------------------------------------------------

    async def _show_working(self) -> WorkingSignal | None:
        target = self._target
        try:
            if target.assistant_thread and target.thread_ts is not None:
                try:
                    await asyncio.wait_for(self._signal_client.assistant_threads_setStatus(
                        channel_id=target.channel, thread_ts=target.thread_ts, status=ASSISTANT_STATUS,
                    ), SIGNAL_TIMEOUT_S)
                    return "status"
                except SlackApiError as exc:  # not an assistant thread after all: react instead
                    log.info("slack.status_unavailable", error=error_code(exc))
            await asyncio.wait_for(self._signal_client.reactions_add(
                channel=target.channel, timestamp=target.source_ts, name=WORKING_REACTION,
            ), SIGNAL_TIMEOUT_S)
            return "reaction"
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.info("slack.working_signal_failed", error=error_code(exc))
        return None

    async def _update(self, ts: str, text: str) -> AsyncSlackResponse:
        return await self._client.chat_update(channel=self._target.channel, ts=ts, markdown_text=text)

    async def _must_land(
        self, method: str, call: Callable[[], Awaitable[AsyncSlackResponse]], *, paced: bool = False,
    ) -> AsyncSlackResponse:
        """`call` until it succeeds or fails for good; raises `PlatformError` after the last attempt."""
        for attempt in range(1, MUST_LAND_ATTEMPTS + 1):
            if paced:
                await self._pacer.wait_for_turn(method, must_land=True)
            backoff = min(RETRY_BACKOFF_S * 2 ** (attempt - 1), RETRY_BACKOFF_MAX_S)
            try:
                return await call()
            except SlackApiError as exc:
                if attempt == MUST_LAND_ATTEMPTS or not _transient(exc):
                    raise PlatformError(f"{method}: {error_code(exc)}") from exc
                delay = _retry_after(exc)
                error = error_code(exc)
            except NETWORK_ERRORS as exc:
                if attempt == MUST_LAND_ATTEMPTS:
                    raise PlatformError(f"{method}: {error_code(exc)}") from exc
                delay, error = None, error_code(exc)
            delay = backoff if delay is None else delay
            log.warning("slack.call_retry", method=method, attempt=attempt, error=error, delay_s=delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _start_stream(self, text: str) -> str | None:
        target = self._target
        assert target.thread_ts is not None  # native is only chosen for replies in a thread
        try:
            response = await self._client.chat_startStream(
                channel=target.channel, thread_ts=target.thread_ts, markdown_text=text,
                recipient_team_id=target.team_id, recipient_user_id=target.user_id,
            )
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            # Not allowed in this workspace or channel: this reply continues with posts and edits.
            log.warning("slack.native_stream_unavailable", error=error_code(exc))
            self._native = False
            self.stream_fallbacks += 1
            return None
        ts = str(response["ts"])
        self._streams[ts] = text
        return ts

    async def _stream(self, ts: str, text: str, *, final: bool) -> bool:
        """Grow a natively streamed message to `text`; False when it must fall back to `chat.update`."""
        sent = self._streams[ts]
        if not text.startswith(sent):
            # The renderer cut this message back to a clean boundary when it split the reply; a stream
            # only appends, so close it and let chat.update set the text.
            await self._stop_stream_quietly(ts)
            return False
        delta = text[len(sent):]
        channel = self._target.channel
        try:
            if final:
                await self._client.chat_stopStream(channel=channel, ts=ts, markdown_text=delta or None)
                del self._streams[ts]
                return True
            if not delta:
                return True
            if not await self._pacer.wait_for_turn("chat.appendStream", must_land=False):
                self.shed_edits += 1  # the next append carries this text too
                return True
            await self._client.chat_appendStream(channel=channel, ts=ts, markdown_text=delta)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            code = error_code(exc)
            log.warning("slack.native_stream_fallback", error=code)
            self._streams.pop(ts, None)
            if code != STREAM_NOT_ACTIVE:
                await self._stop_stream_quietly(ts)
            self._native = False
            self.stream_fallbacks += 1
            return False
        self._streams[ts] = text
        return True

    async def _stop_stream_quietly(self, ts: str) -> None:
        self._streams.pop(ts, None)
        try:
            await self._client.chat_stopStream(channel=self._target.channel, ts=ts)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.info("slack.stream_stop_failed", error=error_code(exc))
