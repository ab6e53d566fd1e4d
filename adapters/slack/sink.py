"""`SlackReplySink`: one reply in a Slack thread or DM, growing by paced `chat.update` edits or by
Slack's native streaming (`chat.startStream` / `appendStream` / `stopStream`).

Slack's budgets are per method, so each step of a reply spends a different one and the first text
never waits behind other replies' edits: the working signal is a reaction on the user's message (or,
in an assistant thread, `assistant.threads.setStatus`), the first text is the `chat.postMessage`, and
only later growth draws on the workspace's shared `chat.update` budget (`pacing.WorkspacePacer`).

That budget (~50 edits a minute for the whole workspace) is allocated, not queued for: a reply grows
by edits only if, when it starts, the budget still keeps a final edit for every reply already doing
so and one for it (`WorkspacePacer.admit_edits`); its progress edits take only what no admitted
reply's final edit needs, so its final edit goes out at once. A reply not admitted is delivered by
posts (`post_limits`): finished paragraphs, lines or sentences become messages of their own as they
complete, and the rest follows with the final text; posts are paced per channel (~1/s), not per
workspace. Every post waits for its channel's turn; posts and final edits always land, retried after
Slack's `Retry-After` (slack-sdk's retry handler first, then here), and every 429 holds back the
shared bucket so other replies and replicas wait too. Text goes out as `markdown_text`, which Slack
renders as standard Markdown, with every mention token neutralised (`neutralise_mentions`).

Slack errors become `PlatformError` here, and `ReplyUndeliverable` when more calls cannot help (the
channel is gone, the bot is not in it or may not post, a moderator deleted the reply).

The working signal is best effort and never holds the reply up: it is shown in the background, and
cleared after the reply in the background too (one call, no retries) when the bot gives the sink a
`background` runner.

A native reply that falls back to edits switches to the edit limits (`limits` changes; the core
`ReplyStream` adopts them on the next delta), so its growing text shows the streaming indicator and
closes an open code fence like any edited reply; the final text is exact either way.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack.pacing import WorkspacePacer
from adapters.slack.retry import DEFAULT_RETRY_AFTER_S, retry_after_s
from adapters.slack.translate import ReplyTarget
from core.errors import PlatformError, ReplyUndeliverable
from core.ports import RenderLimits
from core.types import ReplyInfo

log = structlog.get_logger(__name__)

SLACK_MAX_CHARS = 4000  # chat.update rejects longer text with msg_too_long
SLACK_SPLIT_CHARS = 3500  # continue in a new message past this: room for a closing fence and the indicator
SLACK_MIN_EDIT_INTERVAL_S = 1.0  # chat.update is Tier 3 (~50/min per workspace): ≤ 1 edit/s per message
STREAMING_INDICATOR = " ▍"  # shows the answer is still growing; gone from the final text
# A reply delivered by posts (not admitted to the workspace's edit budget): its first finished
# sentence or line goes out as soon as it exists (under load it is also the working signal: the
# reaction budget is spent), the next stretches at least this far apart (each post also waits for
# the channel's ~1/s turn).
FIRST_CHUNK_AFTER_S = 0.0
POST_CHUNK_INTERVAL_S = 2.0
# Slack turns `<!here>`, `<!channel>`, `<!everyone>`, `<!subteam^ID>` and `<@U…>` into notifications.
# "Formatting message text" (https://docs.slack.dev/messaging/formatting-message-text/): `&`, `<` and
# `>` are control characters for special parsing, and user, user-group and special mentions are
# written `<@…>`/`<!subteam^…>`/`<!here>`. `markdown_text` is posted as a markdown block
# (https://docs.slack.dev/reference/block-kit/blocks/markdown-block), standard Markdown; nothing
# there says those `<…>` forms are left inert, so they are neutralised there too.
# The bot's text is the model's, which anyone can steer, so each such token is broken by a zero-width
# space after the `<` (or after `&lt;`, should Slack decode entities first): it reads the same and
# notifies no one. Only what follows the `<` decides, so a growing text keeps its earlier form as a
# prefix (native streams append to what was sent).
MENTION_TOKEN = re.compile(r"(<|&lt;)(?=[!@])")
ZERO_WIDTH_SPACE = "\u200b"
WORKING_REACTION = "eyes"  # on the user's message while the bot works
ASSISTANT_STATUS = "is thinking…"  # assistant threads show this under the thread instead
SIGNAL_TIMEOUT_S = 3.0  # one working-signal call; best effort, never worth waiting longer for
MUST_LAND_ATTEMPTS = 5  # tries of a post or a final edit, each after Retry-After or a backoff
RETRY_BACKOFF_S = 0.5  # first backoff when Slack gave no Retry-After; doubles per attempt
RETRY_BACKOFF_MAX_S = 8.0
# Slack errors worth another try of a call that must land; anything else would fail again.
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})
# Slack errors after which no call of this reply can succeed: the reply stops and is not reposted.
UNDELIVERABLE_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "message_not_found", "cant_update_message",
    "no_permission", "restricted_action", "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel", "restricted_action_non_threadable_channel",
    "ekm_access_denied", "team_access_not_granted", "access_denied", "missing_scope",
    "invalid_auth", "account_inactive", "token_revoked",
})
# setStatus refusals that hold for the whole app (no assistant:write, not an AI app): stop asking.
STATUS_REFUSED_FOR_APP = frozenset({"missing_scope", "not_allowed_token_type", "no_permission",
                                    "access_denied", "unknown_method", "method_deprecated"})
STATUS_THREADS_REMEMBERED = 10_000  # DM threads known not to take a status; old ones are forgotten
STREAM_NOT_ACTIVE = "message_not_in_streaming_state"  # a native stream expired (~5 min) or was stopped
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError)  # Slack unreachable or too slow, as slack-sdk raises it

WorkingSignal = Literal["reaction", "status"]
Background = Callable[[Coroutine[Any, Any, None]], None]


def edit_limits(min_edit_interval_s: float = SLACK_MIN_EDIT_INTERVAL_S) -> RenderLimits:
    """Replies grown by `chat.update`: each update replaces the whole text."""
    return RenderLimits(
        max_chars=SLACK_MAX_CHARS, split_chars=SLACK_SPLIT_CHARS, min_edit_interval_s=min_edit_interval_s,
        placeholder=None,  # the reaction is the working signal; the first text is the post
        streaming_indicator=STREAMING_INDICATOR,
    )


def post_limits() -> RenderLimits:
    """Replies delivered by posts: never edited, so no indicator and no provisional fence."""
    return RenderLimits(
        max_chars=SLACK_MAX_CHARS, split_chars=SLACK_SPLIT_CHARS, min_edit_interval_s=POST_CHUNK_INTERVAL_S,
        placeholder=None, streaming_indicator="", close_open_fences=False, grow_by_edits=False,
        first_chunk_after_s=FIRST_CHUNK_AFTER_S,
    )


def neutralise_mentions(text: str) -> str:
    """`text` with every Slack mention token made inert (see `MENTION_TOKEN`)."""
    return MENTION_TOKEN.sub(lambda m: m.group(1) + ZERO_WIDTH_SPACE, text)


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


def _rate_limited(exc: SlackApiError) -> bool:
    return getattr(exc.response, "status_code", 200) == 429 or error_code(exc) == "ratelimited"


def _transient(exc: SlackApiError) -> bool:
    status = getattr(exc.response, "status_code", 200)
    return status == 429 or status >= 500 or error_code(exc) in TRANSIENT_ERRORS


def failure(method: str, exc: Exception) -> PlatformError:
    """The error to raise for a call that failed for good."""
    code = error_code(exc)
    if code in UNDELIVERABLE_ERRORS:
        return ReplyUndeliverable(f"{method}: {code}")
    return PlatformError(f"{method}: {code}")


class AssistantStatuses:
    """Where `assistant.threads.setStatus` is known not to work, so a DM thread that is not an AI-app
    thread goes straight to the reaction instead of paying a failed call on every message. One per
    bot, shared by its replies."""

    def __init__(self) -> None:
        self.refused_for_app = False
        self._threads: OrderedDict[tuple[str, str], None] = OrderedDict()

    def worth_trying(self, channel: str, thread_ts: str) -> bool:
        return not self.refused_for_app and (channel, thread_ts) not in self._threads

    def refused(self, channel: str, thread_ts: str, code: str) -> None:
        if code in STATUS_REFUSED_FOR_APP:
            self.refused_for_app = True
            return
        self._threads[(channel, thread_ts)] = None
        while len(self._threads) > STATUS_THREADS_REMEMBERED:
            self._threads.popitem(last=False)


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
        statuses: AssistantStatuses | None = None,
        background: Background | None = None,
        signal_timeout_s: float = SIGNAL_TIMEOUT_S,
        retry_backoff_s: float = RETRY_BACKOFF_S,
    ) -> None:
        self._target = target
        self._client = client  # retries 429s itself (Retry-After), for calls that must land
        self._signal_client = signal_client  # no retries: a late working signal is worthless
        self._pacer = pacer
        # Native streams are replies to a message: a DM answered in place has no thread to stream into.
        self._native = native and target.thread_ts is not None
        limits_for = native_limits if self._native else edit_limits
        self._limits = limits_for(min_edit_interval_s)
        self._edit_limits = edit_limits(min_edit_interval_s)  # taken on when a native stream falls back
        self._statuses = statuses or AssistantStatuses()
        self._background = background  # runs the signal's clean-up after the turn; None: inline
        self._signal_timeout_s = signal_timeout_s
        self._retry_backoff_s = retry_backoff_s
        self._streams: dict[str, str] = {}  # ts → text appended so far, for messages still streaming
        self._signal: asyncio.Task[WorkingSignal | None] | None = None
        self._posts = 0
        self._holder = uuid.uuid4().hex  # this reply, in the workspace's edit allocation
        self._admitted = False  # grows by chat.update with a final edit kept for it
        self.shed_edits = 0  # in-progress edits skipped because the workspace budget was queued up
        self.stream_fallbacks = 0  # native streams that fell back to edits

    @property
    def limits(self) -> RenderLimits:
        return self._limits

    @property
    def by_posts(self) -> bool:
        """Whether this reply is delivered by posts (the workspace's edit budget was allocated)."""
        return not self._limits.grow_by_edits

    @property
    def native(self) -> bool:
        """Whether this reply still streams natively (False once it fell back to edits)."""
        return self._native

    async def start(self) -> None:
        # The reaction's turn in the budget is taken here, so its call goes out before anything the
        # engine asks of Slack next (reading a thread to seed); the call itself runs in the
        # background, because the model request should not wait for its round trip.
        # The reaction's turn and the edit admission are two budgets: asked for at once.
        target = self._target
        status_first = (target.assistant_thread and target.thread_ts is not None
                        and self._statuses.worth_trying(target.channel, target.thread_ts))
        turn, admitted = await asyncio.gather(
            _none() if status_first else self._reaction_turn(),
            _false() if self._native else self._pacer.admit_edits("chat.update", self._holder),
        )
        self._signal = asyncio.create_task(self._show_working(status_first, turn),
                                           name="slack-working-signal")
        if not self._native:
            self._admitted = admitted
            if not self._admitted:
                self._limits = post_limits()
                log.info("slack.reply_by_posts", reason="workspace edit budget allocated")

    async def post(self, text: str) -> str:
        target = self._target
        await self._pacer.wait_to_post(target.channel)
        self._posts += 1
        if self._native:
            ts = await self._start_stream(text)
            if ts is not None:
                return ts
        response = await self._must_land("chat.postMessage", lambda: self._client.chat_postMessage(
            channel=target.channel, thread_ts=target.thread_ts, markdown_text=neutralise_mentions(text),
        ), post_channel=target.channel)
        return str(response["ts"])

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        if ref in self._streams and await self._stream(ref, text, final=final):
            return
        if final:
            await self._must_land("chat.update", lambda: self._update(ref, text))
            return
        if self._admitted:
            turn = await self._pacer.spare_turn("chat.update", self._holder)
        else:  # a native stream that fell back to edits: queue briefly, like any optional call
            turn = await self._pacer.wait_for_turn("chat.update", must_land=False)
        if not turn:
            self.shed_edits += 1
            return
        try:
            with self._pacer.charging("chat.update"):
                await self._update(ref, text)
        except SlackApiError as exc:
            if _rate_limited(exc):  # slack-sdk's own retries ran out: the whole workspace waits
                await self._pacer.hold("chat.update", self._retry_after(exc))
            raise failure("chat.update", exc) from exc
        except NETWORK_ERRORS as exc:
            raise failure("chat.update", exc) from exc

    async def finish(self) -> None:
        if self.shed_edits or self.stream_fallbacks:
            log.info("slack.reply_paced", shed_edits=self.shed_edits, stream_fallbacks=self.stream_fallbacks)
        for ts in list(self._streams):
            await self._stop_stream_quietly(ts)
        if self._admitted:
            self._admitted = False
            await self._pacer.release_edits("chat.update", self._holder)
        if self._signal is None:
            return
        if self._background is not None:
            self._background(self._clear_working_signal(self._signal))
        else:
            await self._clear_working_signal(self._signal)

    def footer(self, info: ReplyInfo) -> str | None:
        return f"_(answered by {info.model})_" if info.fallback_used else None

    def journal_target(self) -> dict[str, str] | None:
        target = self._target
        return {"channel": target.channel, "thread_ts": target.thread_ts or "", "source_ts": target.source_ts,
                "signal": "reaction"}

    # -- the working signal ----------------------------------------------------------------

    async def _reaction_turn(self) -> float | None:
        """Seconds until the working reaction may go out, or None: skip it, the budget is queued up."""
        return await self._pacer.reserve("reactions.add", must_land=False,
                                         shed_after_s=self._pacer.pacing.signal_shed_after_s)

    async def _show_working(self, status_first: bool, turn: float | None) -> WorkingSignal | None:
        target = self._target
        timeout = self._signal_timeout_s
        if status_first and target.thread_ts is not None:
            try:
                await asyncio.wait_for(self._signal_client.assistant_threads_setStatus(
                    channel_id=target.channel, thread_ts=target.thread_ts, status=ASSISTANT_STATUS,
                ), timeout)
                return "status"
            except SlackApiError as exc:  # not an assistant thread after all: react instead
                log.info("slack.status_unavailable", error=error_code(exc))
                self._statuses.refused(target.channel, target.thread_ts, error_code(exc))
            except NETWORK_ERRORS as exc:  # slow or unreachable: the reaction may still make it
                log.info("slack.status_unavailable", error=error_code(exc))
            turn = await self._reaction_turn()
        if turn is None:
            log.info("slack.working_signal_skipped", reason="workspace budget queued up")
            return None
        try:
            if turn > 0:
                await asyncio.sleep(turn)
            await asyncio.wait_for(self._signal_client.reactions_add(
                channel=target.channel, timestamp=target.source_ts, name=WORKING_REACTION,
            ), timeout)
            return "reaction"
        except TimeoutError:
            log.info("slack.working_signal_failed", error="TimeoutError")
            return "reaction"  # it may have landed after all: the clean-up's remove is harmless if not
        except (SlackApiError, aiohttp.ClientError) as exc:
            log.info("slack.working_signal_failed", error=error_code(exc))
        return None

    async def _clear_working_signal(self, signal: asyncio.Task[WorkingSignal | None]) -> None:
        """One best-effort call: a reaction left behind is cosmetic, a retry loop here is not."""
        shown = await signal
        target = self._target
        try:
            if shown == "reaction":
                await self._pacer.wait_for_turn("reactions.remove", must_land=True)
                await asyncio.wait_for(self._signal_client.reactions_remove(
                    channel=target.channel, timestamp=target.source_ts, name=WORKING_REACTION,
                ), self._signal_timeout_s)
            elif shown == "status" and target.thread_ts is not None:
                # Slack clears the status when the bot replies; clearing it again covers a failed reply.
                await asyncio.wait_for(self._signal_client.assistant_threads_setStatus(
                    channel_id=target.channel, thread_ts=target.thread_ts, status="",
                ), self._signal_timeout_s)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.warning("slack.working_signal_not_cleared", signal=shown, error=error_code(exc))

    # -- calls that must land --------------------------------------------------------------

    async def _update(self, ts: str, text: str) -> AsyncSlackResponse:
        return await self._client.chat_update(channel=self._target.channel, ts=ts,
                                              markdown_text=neutralise_mentions(text))

    def _retry_after(self, exc: SlackApiError) -> float:
        found = retry_after_s(getattr(exc.response, "headers", None))
        return DEFAULT_RETRY_AFTER_S if found is None else found

    async def _must_land(
        self, method: str, call: Callable[[], Awaitable[AsyncSlackResponse]], *,
        post_channel: str | None = None,
    ) -> AsyncSlackResponse:
        """`call` until it succeeds or fails for good, each attempt after its turn in the shared
        budget: the method's, or for a post the channel's (whose first turn the caller took).
        Raises `PlatformError` (or `ReplyUndeliverable`) after the last attempt or on an error no
        retry can fix."""
        channel = post_channel
        for attempt in range(1, MUST_LAND_ATTEMPTS + 1):
            if channel is None:
                await self._pacer.wait_for_turn(method, must_land=True)
            elif attempt > 1:
                await self._pacer.wait_to_post(channel)
            delay = min(self._retry_backoff_s * 2 ** (attempt - 1), RETRY_BACKOFF_MAX_S)
            try:
                with self._pacer.charging(method, channel=channel):
                    return await call()
            except SlackApiError as exc:
                if attempt == MUST_LAND_ATTEMPTS or not _transient(exc):
                    raise failure(method, exc) from exc
                if _rate_limited(exc):
                    # slack-sdk's own retries ran out. Hold the bucket back by Retry-After; the next
                    # attempt's turn then comes after it, for this reply and every other.
                    retry_after = self._retry_after(exc)
                    if channel is None:
                        await self._pacer.hold(method, retry_after)
                    else:
                        await self._pacer.hold_posts(channel, retry_after)
                    delay = 0.0
                error = error_code(exc)
            except NETWORK_ERRORS as exc:
                if attempt == MUST_LAND_ATTEMPTS:
                    raise failure(method, exc) from exc
                error = error_code(exc)
            log.warning("slack.call_retry", method=method, attempt=attempt, error=error, delay_s=delay)
            if delay:
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- native streaming ------------------------------------------------------------------

    async def _start_stream(self, text: str) -> str | None:
        target = self._target
        assert target.thread_ts is not None  # native is only chosen for replies in a thread
        try:
            response = await self._client.chat_startStream(
                channel=target.channel, thread_ts=target.thread_ts, markdown_text=neutralise_mentions(text),
                recipient_team_id=target.team_id, recipient_user_id=target.user_id,
            )
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            if error_code(exc) in UNDELIVERABLE_ERRORS:
                raise failure("chat.startStream", exc) from exc
            # Not allowed in this workspace or channel: this reply continues with posts and edits.
            log.warning("slack.native_stream_unavailable", error=error_code(exc))
            self._fall_back_to_edits()
            return None
        ts = str(response["ts"])
        self._streams[ts] = neutralise_mentions(text)
        return ts

    async def _stream(self, ts: str, text: str, *, final: bool) -> bool:
        """Grow a natively streamed message to `text`; False when it must fall back to `chat.update`."""
        sent = self._streams[ts]
        text = neutralise_mentions(text)  # what was sent is neutralised too: compare like with like
        if not text.startswith(sent):
            # The renderer cut this message back to a clean boundary when it split the reply; a stream
            # only appends, so close it and let chat.update set the text.
            await self._stop_stream_quietly(ts)
            return False
        delta = text[len(sent):]
        channel = self._target.channel
        method = "chat.stopStream" if final else "chat.appendStream"
        if final:
            # Retried like a final edit; if it cannot land, chat.update sets the final text instead.
            try:
                await self._must_land("chat.stopStream", lambda: self._client.chat_stopStream(
                    channel=channel, ts=ts, markdown_text=delta or None))
            except ReplyUndeliverable:
                self._streams.pop(ts, None)
                raise
            except PlatformError as exc:
                log.warning("slack.native_stream_fallback", error=str(exc))
                self._streams.pop(ts, None)
                self._fall_back_to_edits()
                return False
            del self._streams[ts]
            return True
        try:
            if not delta:
                return True
            if not await self._pacer.wait_for_turn("chat.appendStream", must_land=False):
                self.shed_edits += 1  # the next append carries this text too
                return True
            with self._pacer.charging("chat.appendStream"):
                await self._client.chat_appendStream(channel=channel, ts=ts, markdown_text=delta)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            code = error_code(exc)
            if code in UNDELIVERABLE_ERRORS:
                self._streams.pop(ts, None)
                raise failure(method, exc) from exc
            log.warning("slack.native_stream_fallback", error=code)
            self._streams.pop(ts, None)
            if code != STREAM_NOT_ACTIVE:
                await self._stop_stream_quietly(ts)
            self._fall_back_to_edits()
            return False
        self._streams[ts] = text
        return True

    def _fall_back_to_edits(self) -> None:
        # From now on the reply grows by chat.update, which can take text back: the renderer adopts
        # these limits on the next delta, so the growing text shows the indicator and closed fences.
        self._native = False
        self._limits = self._edit_limits
        self.stream_fallbacks += 1

    async def _stop_stream_quietly(self, ts: str) -> None:
        self._streams.pop(ts, None)
        try:
            await self._client.chat_stopStream(channel=self._target.channel, ts=ts)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.info("slack.stream_stop_failed", error=error_code(exc))


async def _none() -> None:
    return None


async def _false() -> bool:
    return False
