"""Where a Discord reply goes: `DiscordReplySink` for answers to messages, `InteractionReplySink`
for slash commands.

`core.reply.ReplyStream` drives a sink (one call in flight per reply, newest edit wins, finals
retried); the renderer splits at `DISCORD_SPLIT_CHARS` on clean boundaries with code fences closed
and reopened. What this module adds is Discord's: the typing indicator until the first text, replies
threaded to the question and each part to the previous one, edits paced per channel, error 30046
(no more edits to that message) turned into a fresh message, and discord.py's exceptions translated
into `PlatformError`. It posts nothing on its own initiative.
"""

from __future__ import annotations

import asyncio
import contextlib

import discord
import structlog

from adapters.discord.config import DISCORD_MAX_MESSAGE_CHARS, DISCORD_SPLIT_CHARS, FooterSettings
from adapters.discord.pacing import ChannelPacer
from adapters.discord.translate import message_ref
from core.errors import PlatformError
from core.message_index import MessageIndex
from core.ports import RenderLimits
from core.types import ConversationKey, ReplyInfo

log = structlog.get_logger(__name__)

DISCORD_STREAMING_INDICATOR = " ▌"  # shows the answer is still growing; the final edit drops it
TYPING_REFRESH_S = 8.0  # one trigger shows "typing…" for ~10 s; refresh before it lapses
# The first post waits this long at most for the first typing trigger to land: one arriving after the
# answer would show "typing…" under it for 10 s.
TYPING_SETTLE_S = 2.0
EDITS_TOO_OLD_CODE = 30046  # "Maximum number of edits to messages older than 1 hour reached"
# An edit holds its channel's slot while it runs; one that hangs must not stall every reply in the
# channel for aiohttp's 5-minute default. Generous: it includes discord.py sitting out a 429.
EDIT_TIMEOUT_S = 30.0
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


def _platform_error(action: str, exc: discord.HTTPException) -> PlatformError:
    return PlatformError(f"Discord refused to {action}: HTTP {exc.status}, code {exc.code}: {exc.text}")


class DiscordReplySink:
    """One answer to `trigger`, in its channel: a reply to it (in a guild), then each further part a
    reply to the part before. Bot messages are remembered in the message index under `conversation`,
    so a reply to any of them continues it."""

    def __init__(
        self, *, trigger: discord.Message, conversation: ConversationKey, bot: str, pacer: ChannelPacer,
        index: MessageIndex, limits: RenderLimits, footer: FooterSettings,
    ) -> None:
        self._trigger = trigger
        self._channel = trigger.channel
        self._conversation = conversation
        self._bot = bot
        self._pacer = pacer
        self._index = index
        self._limits = limits
        self._footer = footer
        self._messages: dict[str, discord.Message] = {}
        self._last: discord.Message | None = None
        self._typing: asyncio.Task[None] | None = None
        self._typing_shown = asyncio.Event()

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
        ref = str(sent.id)
        self._messages[ref] = sent
        self._last = sent
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        message = self._messages[ref]
        try:
            async with self._pacer.turn(message.channel.id), asyncio.timeout(EDIT_TIMEOUT_S):
                self._messages[ref] = await message.edit(content=text)
        except TimeoutError as exc:
            raise PlatformError(f"Discord did not confirm an edit within {EDIT_TIMEOUT_S:g} s") from exc
        except discord.HTTPException as exc:
            if exc.code != EDITS_TOO_OLD_CODE:
                raise _platform_error("edit a message", exc) from exc
            await self._replace(ref, message, text)

    async def finish(self) -> None:
        await self._stop_typing()

    def footer(self, info: ReplyInfo) -> str | None:
        return footer_text(info, self._footer)

    # -- internals -------------------------------------------------------------------------

    async def _send(self, text: str, reference: discord.MessageReference | None) -> discord.Message:
        try:
            sent = await self._channel.send(text, reference=reference) if reference is not None \
                else await self._channel.send(text)
        except discord.HTTPException as exc:
            raise _platform_error("post a message", exc) from exc
        await self._index.remember(self._bot, [message_ref(sent.id)], self._conversation)
        return sent

    async def _replace(self, ref: str, old: discord.Message, text: str) -> None:
        """Discord will not edit `old` any more (30046): carry on in a new message in its place,
        replying where it replied, and remove the stale copy so nothing shows twice."""
        log.warning("discord.edit_limit_reached", message=old.id, channel=old.channel.id)
        previous = old.reference
        reference = None if previous is None or previous.message_id is None else discord.MessageReference(
            message_id=previous.message_id, channel_id=previous.channel_id, guild_id=previous.guild_id,
            fail_if_not_exists=False,
        )
        sent = await self._send(text, reference)
        self._messages[ref] = sent
        if self._last is not None and self._last.id == old.id:
            self._last = sent
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
            await asyncio.sleep(TYPING_REFRESH_S)

    async def _stop_typing(self) -> None:
        task, self._typing = self._typing, None
        if task is None or task.done():
            return
        if not self._typing_shown.is_set():  # let the first trigger land before the answer does
            shown = asyncio.create_task(self._typing_shown.wait())
            await asyncio.wait({task, shown}, timeout=TYPING_SETTLE_S, return_when=asyncio.FIRST_COMPLETED)
            shown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shown
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
            raise _platform_error("answer a command", exc) from exc
        return str(sent.id)

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        try:
            if ref == ORIGINAL_RESPONSE_REF:
                await self._interaction.edit_original_response(content=text)
            else:
                await self._interaction.followup.edit_message(int(ref), content=text)
        except discord.HTTPException as exc:
            raise _platform_error("edit a command answer", exc) from exc

    async def finish(self) -> None:
        """Nothing to clear."""

    def footer(self, info: ReplyInfo) -> str | None:
        return None
