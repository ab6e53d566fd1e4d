"""Where a Discord reply goes: `DiscordReplySink` for answers to messages, `InteractionReplySink`
for slash commands.

`core.reply.ReplyStream` drives a sink (one call in flight per reply, newest edit wins, finals
retried); the renderer splits at `DISCORD_SPLIT_CHARS` on clean boundaries with code fences closed
and reopened. What this module adds is Discord's: the typing indicator until the first text, replies
threaded to the question and each part to the previous one, edits paced per channel (not at all once
the bot is shutting down), a message Discord will no longer edit (30046) or whose final edit failed
replaced by a fresh one in its place, a refused reply arrow (160002) dropped, and discord.py's
exceptions translated into `PlatformError`, or `ReplyUndeliverable` when no further call can help.
It posts nothing on its own initiative.
"""

from __future__ import annotations

import asyncio

import aiohttp
import discord
import structlog

from adapters.discord.config import (
    DISCORD_MAX_MESSAGE_CHARS,
    DISCORD_SPLIT_CHARS,
    DISCORD_TYPING_REFRESH_S,
    FooterSettings,
)
from adapters.discord.pacing import ChannelPacer
from adapters.discord.translate import message_ref
from core.background import stop_task
from core.errors import PlatformError, ReplyUndeliverable
from core.message_index import MessageIndex
from core.ports import RenderLimits
from core.types import ConversationKey, ReplyInfo

log = structlog.get_logger(__name__)

DISCORD_STREAMING_INDICATOR = " ▌"  # shows the answer is still growing; the final edit drops it
# The first post waits this long at most for the first typing trigger to land: one arriving after the
# answer would show "typing…" under it for 10 s.
TYPING_SETTLE_S = 2.0
EDITS_TOO_OLD_CODE = 30046  # "Maximum number of edits to messages older than 1 hour reached"
REPLY_NEEDS_HISTORY_CODE = 160002  # "Cannot reply without permission to read message history"
# Besides any 403 or 404 (no access or permission; channel, message, interaction or webhook gone):
# errors no retry and no new message can get past. Retrying would only add invalid requests.
UNDELIVERABLE_CODES = frozenset({
    50083,  # "Operation cannot be performed on an archived thread"
    160005,  # "Thread is locked"
})
# An edit holds its channel's slot while it runs; one that hangs must not stall every reply in the
# channel for aiohttp's 5-minute default. Generous: it includes discord.py sitting out a 429.
EDIT_TIMEOUT_S = 30.0
# A final edit is what the user keeps: tried this often (each attempt is discord.py's own, which
# already waits out 429s), with a backoff between, before the reply journal takes over. The only
# retries within a turn: core neither retries nor reposts.
FINAL_EDIT_ATTEMPTS = 3
FINAL_EDIT_BACKOFF_S = 0.5  # doubles per attempt
ORIGINAL_RESPONSE_REF = "original"  # an interaction's first (deferred) response
FOOTER_PREFIX = "-# "  # Discord's subtext markdown: one small grey line
FOOTER_SEPARATOR = " · "
COMMAND_LIMITS = RenderLimits(
    max_chars=DISCORD_MAX_MESSAGE_CHARS, split_chars=DISCORD_SPLIT_CHARS,
    min_edit_interval_s=0.0,  # command answers are whole sentences, posted once
    placeholder=None, streaming_indicator="",
)


def discord_limits(edit_interval_s: float) -> RenderLimits:
    """How answers are shaped on Discord. No placeholder: the typing indicator says "working" until
    the first token, and a placeholder would cost one more edit from the channel's budget."""
    return RenderLimits(
        max_chars=DISCORD_MAX_MESSAGE_CHARS, split_chars=DISCORD_SPLIT_CHARS,
        min_edit_interval_s=edit_interval_s, placeholder=None,
        streaming_indicator=DISCORD_STREAMING_INDICATOR,
    )


def footer_text(info: ReplyInfo, settings: FooterSettings) -> str | None:
    """The small note under a finished answer, or None when there is nothing the settings want said."""
    parts: list[str] = []
    if info.fallback_used and settings.show_fallback:
        parts.append(f"answered by fallback model `{info.model}`" if settings.show_model
                     else "answered by a fallback model")
    elif settings.show_model:
        parts.append(f"model: `{info.model}`")
    if info.history_trimmed and settings.show_trimmed:
        parts.append("older messages were left out to fit the model's context")
    return FOOTER_PREFIX + FOOTER_SEPARATOR.join(parts) if parts else None


def platform_error(action: str, exc: discord.HTTPException) -> PlatformError:
    """discord.py's error as ours: `ReplyUndeliverable` when Discord will refuse every further
    call for this reply (so nothing is retried or reposted), else `PlatformError`."""
    message = f"Discord refused to {action}: HTTP {exc.status}, code {exc.code}: {exc.text}"
    if isinstance(exc, discord.Forbidden | discord.NotFound) or exc.code in UNDELIVERABLE_CODES:
        return ReplyUndeliverable(message)
    return PlatformError(message)


class DiscordReplySink:
    """One answer to `trigger`, in its channel: a reply to it (in a guild), then each further part a
    reply to the part before. Bot messages are remembered in the message index under `conversation`,
    so a reply to any of them continues it.

    Discord refusing for good (no permission, channel or thread gone or archived, the answer deleted
    by a moderator) raises `ReplyUndeliverable`: the engine stops the reply and posts nothing anew.
    """

    def __init__(
        self, *, trigger: discord.Message, conversation: ConversationKey, bot: str, pacer: ChannelPacer,
        index: MessageIndex, limits: RenderLimits, footer: FooterSettings,
        typing_refresh_s: float = DISCORD_TYPING_REFRESH_S,
    ) -> None:
        self._trigger = trigger
        self._channel = trigger.channel
        self._conversation = conversation
        self._bot = bot
        self._pacer = pacer
        self._index = index
        self._limits = limits
        self._footer = footer
        self._typing_refresh_s = typing_refresh_s
        self._messages: dict[str, discord.Message] = {}
        self._last: discord.Message | None = None
        self._typing: asyncio.Task[None] | None = None
        self._typing_shown = asyncio.Event()
        self._replies = True  # False once Discord refused a reply arrow here (160002)

    @property
    def limits(self) -> RenderLimits:
        return self._limits

    async def start(self) -> None:
        # In a task: the model request starts at once instead of after a round trip to Discord.
        self._typing = asyncio.create_task(self._keep_typing(), name="discord-typing")

    async def post(self, text: str) -> str:
        await self._stop_typing()
        # In a DM the answer needs no reply arrow; in a guild it shows which question it answers.
        target = self._last or (self._trigger if self._trigger.guild is not None else None)
        reference = target.to_reference(fail_if_not_exists=False) if target is not None else None
        sent = await self._send(text, reference)
        self._last = sent
        ref = str(sent.id)
        self._messages[ref] = sent
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        attempts = FINAL_EDIT_ATTEMPTS if final else 1
        for attempt in range(1, attempts + 1):
            try:
                await self._edit_once(ref, text, final=final)
                return
            except ReplyUndeliverable:
                raise
            except PlatformError as exc:
                if attempt == attempts:
                    raise
                log.warning("discord.edit_retry", attempt=attempt, error=str(exc))
                await asyncio.sleep(FINAL_EDIT_BACKOFF_S * 2 ** (attempt - 1))

    async def _edit_once(self, ref: str, text: str, *, final: bool) -> None:
        message = self._messages[ref]
        if not final and self._pacer.draining:
            return  # shutting down: the final edit follows with newer text; save the request
        try:
            async with self._pacer.turn(message.channel.id), asyncio.timeout(EDIT_TIMEOUT_S):
                if not final and self._pacer.draining:
                    return
                self._messages[ref] = await message.edit(content=text)
        except TimeoutError as exc:
            raise PlatformError(f"Discord did not confirm an edit within {EDIT_TIMEOUT_S:g} s") from exc
        except discord.HTTPException as exc:
            if exc.code == EDITS_TOO_OLD_CODE:
                await self._replace(ref, message, text)
                return
            raise platform_error("edit a message", exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PlatformError(f"could not reach Discord to edit a message: {exc!r}") from exc

    async def finish(self) -> None:
        await self._stop_typing()

    def footer(self, info: ReplyInfo) -> str | None:
        return footer_text(info, self._footer)

    def journal_target(self) -> dict[str, str] | None:
        return {"channel": str(self._channel.id)}

    # -- internals -------------------------------------------------------------------------

    async def _send(self, text: str, reference: discord.MessageReference | None) -> discord.Message:
        try:
            try:
                if reference is not None and self._replies:
                    sent = await self._channel.send(text, reference=reference)
                else:
                    sent = await self._channel.send(text)
            except discord.HTTPException as exc:
                if exc.code != REPLY_NEEDS_HISTORY_CODE or reference is None or not self._replies:
                    raise
                # The bot may post but not read history, so not reply: post plainly, here and for
                # the rest of this answer, rather than lose it.
                log.warning("discord.reply_refused", channel=self._channel.id,
                            hint="give the bot Read Message History in this channel")
                self._replies = False
                sent = await self._channel.send(text)
        except discord.HTTPException as exc:
            raise platform_error("post a message", exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PlatformError(f"could not reach Discord to post a message: {exc!r}") from exc
        await self._index.remember(self._bot, [message_ref(sent.id)], self._conversation)
        return sent

    def _replaced(self, old: discord.Message, new: discord.Message) -> None:
        """`new` takes `old`'s place: later parts reply to it."""
        if self._last is None or self._last.id == old.id:
            self._last = new

    async def _replace(self, ref: str, old: discord.Message, text: str) -> None:
        """Discord will not edit `old` any more (30046): carry on in a new message in its place,
        replying where it replied, and remove the stale copy so nothing shows twice."""
        log.warning("discord.edit_limit_reached", message=old.id, channel=old.channel.id)
        sent = await self._send(text, _same_reference_as(old))
        self._messages[ref] = sent
        self._replaced(old, sent)
        await self._delete_stale(old)

    async def _delete_stale(self, old: discord.Message) -> None:
        try:
            await old.delete()
        except discord.HTTPException as exc:  # the new message has everything; a stale copy is harmless
            log.warning("discord.stale_delete_failed", message=old.id, status=exc.status, code=exc.code)

    async def _keep_typing(self) -> None:
        while True:
            try:
                await self._channel.typing()
            except discord.HTTPException as exc:  # no indicator is no reason to fail the answer
                log.warning("discord.typing_failed", status=exc.status, code=exc.code)
                return
            self._typing_shown.set()
            await asyncio.sleep(self._typing_refresh_s)

    async def _stop_typing(self) -> None:
        task, self._typing = self._typing, None
        if task is None or task.done():
            return
        if not self._typing_shown.is_set():  # let the first trigger land before the answer does
            shown = asyncio.create_task(self._typing_shown.wait())
            await asyncio.wait({task, shown}, timeout=TYPING_SETTLE_S, return_when=asyncio.FIRST_COMPLETED)
            await stop_task(shown)
        await stop_task(task)


def _same_reference_as(message: discord.Message) -> discord.MessageReference | None:
    """A reply arrow to what `message` replied to (None if it replied to nothing)."""
    previous = message.reference
    if previous is None or previous.message_id is None:
        return None
    return discord.MessageReference(
        message_id=previous.message_id, channel_id=previous.channel_id, guild_id=previous.guild_id,
        fail_if_not_exists=False,
    )


class InteractionReplySink:
    """The private (ephemeral) answer to a deferred slash command: the deferred response first,
    follow-ups after it. Commands answer in one piece, so there is no pacing and no indicator."""

    def __init__(self, interaction: discord.Interaction[discord.Client]) -> None:
        self._interaction = interaction
        self._original_used = False

    @property
    def limits(self) -> RenderLimits:
        return COMMAND_LIMITS

    async def start(self) -> None:
        """Nothing: the deferred response already shows "thinking…"."""

    async def post(self, text: str) -> str:
        try:
            if not self._original_used:
                await self._interaction.edit_original_response(content=text)
                self._original_used = True
                return ORIGINAL_RESPONSE_REF
            sent = await self._interaction.followup.send(text, ephemeral=True, wait=True)
        except discord.HTTPException as exc:
            raise platform_error("answer a command", exc) from exc
        return str(sent.id)

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        try:
            if ref == ORIGINAL_RESPONSE_REF:
                await self._interaction.edit_original_response(content=text)
            else:
                await self._interaction.followup.edit_message(int(ref), content=text)
        except discord.HTTPException as exc:
            raise platform_error("edit a command answer", exc) from exc

    async def finish(self) -> None:
        """Nothing to clear."""

    def footer(self, info: ReplyInfo) -> str | None:
        return None

    def journal_target(self) -> dict[str, str] | None:
        return None  # an interaction's token expires: its ephemeral answer is not journalled
