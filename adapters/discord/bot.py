"""`DiscordBot`: one Discord bot — its gateway connection (one client, or an `AutoShardedClient` for
a share of a sharded bot), its slash commands, and the path from a message to the engine and back.

Order of a message: drop bots and webhooks (itself included) → is it for the bot at all (a DM, a
mention, a reply to the bot, a channel it answers everything in)? → which conversation (the message
index, then the event; bound to every log line from here on) → access lists (a refusal is said once
per user and channel) → the engine, answering through a `DiscordReplySink`, with the message's files
(`adapters.discord.files`). The first two steps are synchronous, so a busy guild costs no task per
message. Commands (`reset`, `help`) belong to the engine (`IncomingMessage.command`); `/reset` and
`/help` only translate an interaction into it, and `/persona` into `ConversationEngine.
persona_command`. 👍 / 👎 reactions become `ConversationEngine.vote` calls.
This module must not know about `bots/` (settings, TOML).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Literal

import aiohttp
import discord
import structlog
from discord import app_commands

from adapters.discord.access import Place, Refusal, Sender, in_channels
from adapters.discord.config import DiscordConfig
from adapters.discord.files import FileDownloader, attachments_of
from adapters.discord.finaliser import DiscordFinaliser
from adapters.discord.gateway_guard import guard_gateway_parsers
from adapters.discord.pacing import ChannelPacer, rate_limit_trace
from adapters.discord.redaction import install_token_filter
from adapters.discord.sink import DiscordReplySink, InteractionReplySink, discord_limits
from adapters.discord.translate import (
    PLATFORM,
    Addressed,
    addressing,
    bot_can_send,
    command_conversation,
    command_message,
    conversation_for,
    incoming_message,
    latest_ref,
    message_ref,
    persona_channel,
    persona_set_commands,
    persona_unset_command,
    place_of,
    sender_of,
    vote_of,
)
from core.engine import ConversationEngine
from core.errors import PlatformError
from core.message_index import MessageIndex
from core.ports import Coordination, MessageObserver
from core.supervisor import ReplySupervisor
from core.types import Command, ConversationKey, parse_command

log = structlog.get_logger(__name__)

# All of `stop` unless the constructor is given `stop_budget_s` (the runner passes SHUTDOWN_GRACE_S,
# the one shutdown setting). Replies get `DiscordConfig.stop_grace_s` of it to finish; the cut-short
# ones get the rest, less `CLOSE_TIMEOUT_S`, to leave their final message.
STOP_BUDGET_S = 30.0
CLOSE_TIMEOUT_S = 3.0  # kept for the end: the gateway task ends promptly once the client is closed
# The model's text may contain "@everyone" or role mentions: never let an answer ping anyone but the
# person it replies to.
ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)
RESET_DESCRIPTION = "Forget this conversation; the next message starts fresh"
HELP_DESCRIPTION = "What this bot does and how to talk to it"
PERSONA_DESCRIPTION = "This channel's own model, fallbacks or system prompt"
PERSONA_SET_NEEDS_AN_OPTION = "Give at least one of `model`, `fallbacks` or `prompt`."
# Manage Server: who sees `/persona` by default. Server admins may change that in Server Settings →
# Integrations, so changes are still checked against the member's permissions (or the bot's list).
PERSONA_PERMISSIONS = discord.Permissions(manage_guild=True)
MAX_COMMAND_REPLY_CHARS = 2000
NOTHING_TO_RESET = (
    "You have no conversation with me in this channel. Here each @mention starts its own conversation "
    "and replying to my answers continues it."
)


@dataclass(frozen=True)
class _Addressed:
    """A message that passed the synchronous checks, with what they found."""

    addressed: Addressed
    sender: Sender
    place: Place
    shared: bool  # the channel is one conversation (`respond_to_all` or `channel_memory`)


class DiscordBot:
    """Implements `core.ports.BotRuntime` for one Discord bot definition."""

    def __init__(
        self,
        engine: ConversationEngine,
        config: DiscordConfig,
        *,
        index: MessageIndex,
        coordination: Coordination,
        observer: MessageObserver | None = None,
        reactions: MessageObserver | None = None,
        stop_budget_s: float = STOP_BUDGET_S,
    ) -> None:
        self._engine = engine
        self._config = config
        self._index = index
        self._coordination = coordination
        self._observer = observer
        self._reactions = reactions  # told what became of each reaction (by the reacted message's id)
        self._stop_budget_s = stop_budget_s
        install_token_filter()  # before the client exists: its first interaction may be logged
        # Replies and slash commands in flight; every log line of this bot carries its context
        # (the engine adds `conversation` and `model`).
        self._replies = ReplySupervisor.for_bot(engine.profile, PLATFORM)
        self._pacer = ChannelPacer(config.edit_interval_s)
        self._limits = discord_limits(config.edit_interval_s)
        self._client = self._make_client()
        guard_gateway_parsers(self._client, self._log_context())
        self._files = FileDownloader(proxy=self._client.http.proxy, proxy_auth=self._client.http.proxy_auth)
        self._tree = app_commands.CommandTree(self._client)
        self._add_commands()
        self._client.event(self.on_ready)
        self._client.event(self.on_message)
        self._client.event(self.on_raw_reaction_add)
        self._client.event(self.on_raw_reaction_remove)
        self._accepting = False
        self._connection: asyncio.Task[None] | None = None

    # -- BotRuntime ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._engine.profile.name

    @property
    def ready(self) -> bool:
        return self._accepting and self._client.is_ready() and not self._client.is_closed()

    @property
    def pacer(self) -> ChannelPacer:
        """The per-channel edit pacing of this bot (one Discord rate-limit domain per token)."""
        return self._pacer

    @property
    def client(self) -> discord.Client:
        return self._client

    async def start(self) -> None:
        """Log in (a bad token fails here, loudly), register slash commands, then keep the gateway
        connection in a task (discord.py reconnects and resumes on its own)."""
        try:
            await self._client.login(self._config.token)
        except discord.LoginFailure as exc:
            await self._client.close()
            raise PlatformError(f"{self.name}: Discord rejected the bot token") from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            await self._client.close()
            raise PlatformError(f"{self.name}: could not reach Discord to log in: {exc!r}") from exc
        await self._sync_commands()
        self._accepting = True
        self._connection = asyncio.create_task(self._stay_connected(), name=f"discord-{self.name}")

    async def wait_until_ready(self) -> None:
        """Until the gateway session is ready (guilds cached). Call after `start`."""
        await self._client.wait_until_ready()

    async def wait_idle(self) -> None:
        """Until every reply and command started so far has finished (tests and benchmarks)."""
        await self._replies.wait_idle()

    def finaliser(self) -> DiscordFinaliser:
        """How the reply journal reaches this bot's answers (REST only: any shard will do)."""
        return DiscordFinaliser(self._client)

    async def stop(self) -> None:
        """Stop taking messages and let replies in flight finish for `stop_grace_s`. Cancel the rest:
        the engine still leaves each a final message, and with the channel spacing lifted their final
        edits go out at once; wait for them. Only then disconnect. All within `stop_budget_s`."""
        self._accepting = False
        # Ten replies cut short in one channel would otherwise queue their final edits an interval
        # apart (hence `pacer.drain`), and the disconnect below would leave them half-written.
        await self._replies.drain(
            finish_s=self._config.stop_grace_s, total_s=self._stop_budget_s - CLOSE_TIMEOUT_S,
            on_cut_short=self._pacer.drain,
        )
        await self._client.close()
        await self._files.close()
        if self._connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._connection, CLOSE_TIMEOUT_S)

    # -- gateway events ---------------------------------------------------------------------

    async def on_ready(self) -> None:
        log.info("discord.ready", **self._log_context(), guilds=len(self._client.guilds),
                 shards=self._config.shard_ids if self._config.sharded else None)

    async def on_message(self, message: discord.Message) -> None:
        """Triage at once; only a message for the bot gets a task (tracked, so `stop` can wait)."""
        if not self._accepting:
            self._tell(message.id, "ignored_stopping")
            return
        triaged = self._triage(message)
        if isinstance(triaged, str):
            self._tell(message.id, triaged)
            return
        self._replies.spawn(self._answer(message, triaged), name=f"discord-message-{message.id}")

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=False)

    # -- reactions --------------------------------------------------------------------------

    async def _reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        """👍 / 👎 on one of the bot's answers is a vote (`core.feedback`); removing it, un-voting.
        Raw events: the message need not be in discord.py's cache (answers from before a restart)."""
        outcome = "crashed"
        self._replies.track(asyncio.current_task())
        try:
            outcome = await self._reaction_checked(payload, added=added)
        except Exception:  # the adapter's entry point: log; a vote is never worth more
            log.exception("discord.reaction_crashed", message=payload.message_id)
        finally:
            if self._reactions is not None:
                self._reactions.message_handled(payload.message_id, outcome)

    async def _reaction_checked(self, payload: discord.RawReactionActionEvent, *, added: bool) -> str:
        me = self._client.user
        if not self._accepting or me is None:
            return "ignored_stopping" if me is not None else "ignored_not_ready"
        vote = vote_of(payload.emoji)
        if vote is None:
            return "ignored_emoji"
        if payload.user_id == me.id or (payload.member is not None and payload.member.bot):
            return "ignored_bot"
        # Adds say whose message it is: skip Redis for the many reactions on people's messages.
        if added and payload.message_author_id is not None and payload.message_author_id != me.id:
            return "not_an_answer"
        if added:  # who may not talk to the bot does not vote either (removals only undo)
            sender = (sender_of(payload.member) if payload.member is not None
                      else Sender(user_id=payload.user_id, display_name=""))
            channel = self._client.get_channel(payload.channel_id)
            place = place_of(channel, channel_id=payload.channel_id, guild_id=payload.guild_id)
            if self._config.access.check(sender, place) is not None:
                return "refused"
        with self._replies.bind():
            return await self._engine.vote(str(payload.channel_id), str(payload.message_id),
                                           str(payload.user_id), vote, added=added)

    # -- messages ---------------------------------------------------------------------------

    def _triage(self, message: discord.Message) -> _Addressed | str:
        me = self._client.user
        if me is None:  # not logged in (yet)
            return "ignored_not_ready"
        sender = sender_of(message.author, webhook=message.webhook_id is not None)
        if sender.is_bot:  # other bots, webhooks and this bot's own echoed messages
            return "ignored_bot"
        guild = message.guild
        place = place_of(message.channel, channel_id=message.channel.id,
                         guild_id=guild.id if guild is not None else None)
        whole_channel = not place.is_dm and in_channels(place, self._config.respond_to_all)
        own_role = guild.self_role if guild is not None else None
        addressed = addressing(message, bot_id=me.id, bot_role_id=own_role.id if own_role else None,
                               answer_all=whole_channel)
        if addressed is None:
            return "ignored_not_addressed"
        if guild is not None and not bot_can_send(message.channel, guild.me):
            log.warning("discord.cannot_send", **self._log_context(), channel=place.channel_id,
                        hint="give the bot View Channel, Send Messages (in Threads) and Read "
                             "Message History there")
            return "ignored_cannot_send"
        return _Addressed(addressed, sender, place, self._shared(place))

    async def _answer(self, message: discord.Message, triaged: _Addressed) -> None:
        outcome = "crashed"
        try:
            outcome = await self._answer_checked(message, triaged)
        except asyncio.CancelledError:  # shutdown cut it short; the engine left a final message
            outcome = "interrupted"
            raise
        except Exception:  # the adapter's entry point: log; the engine already left a final message
            log.exception("discord.message_crashed", message=message.id)
        finally:
            self._tell(message.id, outcome)

    async def _answer_checked(self, message: discord.Message, triaged: _Addressed) -> str:
        sender, place = triaged.sender, triaged.place
        text = triaged.addressed.text  # "@bot" alone is empty: core reads it as `help`
        continued = await self._continued(triaged, text)
        conversation = conversation_for(place, triaged.addressed, message.id,
                                        shared=triaged.shared, continued=continued)
        with self._replies.bind(conversation=str(conversation)):
            refusal = self._config.access.check(sender, place)
            if refusal is not None:
                return await self._refuse(message, sender, place, refusal)
            return await self._answer_allowed(message, triaged, conversation, text)

    async def _answer_allowed(
        self, message: discord.Message, triaged: _Addressed, conversation: ConversationKey, text: str
    ) -> str:
        sender, place = triaged.sender, triaged.place
        refs = [message_ref(message.id)]
        if self._is_chain_channel(place, triaged.shared):
            refs.append(latest_ref(place.channel_id, sender.user_id))
        # Before answering, so a reply to this very message made meanwhile finds its conversation.
        await self._index.remember(self.name, refs, conversation)
        sink = DiscordReplySink(
            trigger=message, conversation=conversation, bot=self.name, pacer=self._pacer,
            index=self._index, limits=self._limits, footer=self._config.footer,
            typing_refresh_s=self._config.typing_refresh_s,
        )
        max_bytes = self._engine.profile.attachments.max_file_bytes
        files = attachments_of(message.attachments,
                               read=lambda url: self._files.read(url, max_bytes=max_bytes))
        incoming = incoming_message(message, bot=self.name, conversation=conversation, text=text,
                                    sender=sender, attachments=files, persona=persona_channel(place))
        outcome = await self._engine.handle(incoming, sink)
        return outcome.status

    async def _continued(self, triaged: _Addressed, text: str) -> ConversationKey | None:
        """What the message index knows: the replied-to message's conversation, or — for a typed
        `reset` that replies to nothing — the user's latest chain in this channel."""
        place, addressed = triaged.place, triaged.addressed
        if not self._is_chain_channel(place, triaged.shared):
            return None
        if addressed.replied_to is not None:
            return await self._index.conversation_of(self.name, message_ref(addressed.replied_to))
        if parse_command(text) is Command.RESET:
            return await self._index.conversation_of(
                self.name, latest_ref(place.channel_id, triaged.sender.user_id))
        return None

    @staticmethod
    def _is_chain_channel(place: Place, shared: bool) -> bool:
        """A plain guild channel, where conversations are reply chains."""
        return not (place.is_dm or place.is_thread or shared)

    def _shared(self, place: Place) -> bool:
        """A guild channel that is one conversation: one the bot answers everything in
        (`respond_to_all`), or a `channel_memory` one, where every mention continues the channel's
        history. Either list matches a channel's threads and a category's channels; a thread is
        one conversation of its own anyway."""
        shared = self._config.respond_to_all | self._config.channel_memory
        return not place.is_dm and in_channels(place, shared)

    async def _refuse(self, message: discord.Message, sender: Sender, place: Place, refusal: Refusal) -> str:
        """Say why, once per user and channel (a day, across replicas); after that stay quiet, so a
        refused user cannot make the bot spam the channel."""
        first_time = await self._coordination.claim_event(
            self.name, f"refusal:{sender.user_id}:{place.channel_id}")
        if not first_time:
            return "refused_quietly"
        try:
            if place.is_dm:
                await message.channel.send(refusal.value)
            else:
                await message.reply(refusal.value)
        except discord.HTTPException as exc:
            log.warning("discord.refusal_failed", status=exc.status, code=exc.code)
        log.info("discord.refused", reason=refusal.name, user=sender.user_id, channel=place.channel_id)
        return "refused"

    # -- slash commands ---------------------------------------------------------------------

    def _add_commands(self) -> None:
        # Closures, not methods: discord.py reads a command's options from its callback's signature.
        async def reset(interaction: discord.Interaction[discord.Client]) -> None:
            await self._reset_command(interaction)

        async def help_(interaction: discord.Interaction[discord.Client]) -> None:
            await self._help_command(interaction)

        commands: list[app_commands.Command[app_commands.Group, ..., None] | app_commands.Group] = [
            app_commands.Command(name="reset", description=RESET_DESCRIPTION, callback=reset),
            app_commands.Command(name="help", description=HELP_DESCRIPTION, callback=help_),
            self._persona_group(),
        ]
        guilds = [discord.Object(id=g) for g in self._config.guild_ids]
        for command in commands:
            if guilds:
                self._tree.add_command(command, guilds=guilds)
            else:
                self._tree.add_command(command)

    def _persona_group(self) -> app_commands.Group:
        """`/persona show|set|unset`: guild-only, shown to members with Manage Server by default."""
        group = app_commands.Group(name="persona", description=PERSONA_DESCRIPTION, guild_only=True,
                                   default_permissions=PERSONA_PERMISSIONS)

        async def show(interaction: discord.Interaction[discord.Client]) -> None:
            await self._persona_command(interaction, ["show"])

        @app_commands.describe(
            model="The model to answer with in this channel",
            fallbacks="Models to try when it fails, separated by spaces or commas; or: none",
            prompt="This channel's system prompt",
        )
        async def set_(
            interaction: discord.Interaction[discord.Client], model: str | None = None,
            fallbacks: str | None = None, prompt: str | None = None,
        ) -> None:
            await self._persona_command(
                interaction, persona_set_commands(model=model, fallbacks=fallbacks, prompt=prompt))

        @app_commands.describe(field="What to reset to the bot's own setting")
        async def unset(
            interaction: discord.Interaction[discord.Client],
            field: Literal["model", "fallbacks", "prompt", "all"],
        ) -> None:
            await self._persona_command(interaction, [persona_unset_command(field)])

        group.add_command(app_commands.Command(
            name="show", description="Show this channel's persona", callback=show))
        group.add_command(app_commands.Command(
            name="set", description="Give this channel its own model, fallbacks or prompt", callback=set_))
        group.add_command(app_commands.Command(
            name="unset", description="Back to the bot's own settings here", callback=unset))
        return group

    async def _sync_commands(self) -> None:
        """Guild commands appear at once; global ones can take up to an hour to show everywhere.
        Each guild on its own: one the bot has left (or may not register in) must not cost the others
        their commands."""
        if not self._config.syncs_commands:
            return
        if not self._config.guild_ids:
            if await self._sync_commands_to(None):
                log.info("discord.commands_synced", **self._log_context(), guilds="global")
            return
        synced = [g for g in self._config.guild_ids if await self._sync_commands_to(g)]
        if synced:
            log.info("discord.commands_synced", **self._log_context(), guilds=synced)

    async def _sync_commands_to(self, guild_id: int | None) -> bool:
        try:
            await self._tree.sync(guild=discord.Object(id=guild_id) if guild_id is not None else None)
        except discord.HTTPException as exc:  # the bot still answers messages without its commands
            log.warning("discord.commands_sync_failed", **self._log_context(), guild=guild_id or "global",
                        status=exc.status, code=exc.code, error=exc.text)
            return False
        return True

    def _interaction_place(self, interaction: discord.Interaction[discord.Client]) -> Place:
        return place_of(interaction.channel, channel_id=interaction.channel_id or 0,
                        guild_id=interaction.guild_id)

    async def _help_command(self, interaction: discord.Interaction[discord.Client]) -> None:
        place = self._interaction_place(interaction)
        refusal = self._config.access.check(sender_of(interaction.user), place)
        if refusal is not None:
            text = refusal.value
        else:
            text = await self._engine.help_for(persona_channel(place))
        await interaction.response.send_message(_fit(text), ephemeral=True)

    async def _persona_command(
        self, interaction: discord.Interaction[discord.Client], commands: list[str]
    ) -> None:
        """`/persona …` as `core.personas` commands (several for a `set` with several options, run
        in order and answered together). Changes need Manage Server in this guild or a place in the
        bot definition's `[personas] admins`; `show` is open to whoever may use the command."""
        self._replies.track(asyncio.current_task())
        sender = sender_of(interaction.user)
        place = self._interaction_place(interaction)
        admin = self._persona_admin(interaction)
        refusal = self._config.access.check(sender, place)
        if refusal is not None and not admin:  # server managers configure even where it is refused
            await interaction.response.send_message(refusal.value, ephemeral=True)
            return
        if place.is_dm:  # guild-only; Discord should not deliver it here
            await interaction.response.send_message("Personas belong to server channels.", ephemeral=True)
            return
        if not commands:
            await interaction.response.send_message(PERSONA_SET_NEEDS_AN_OPTION, ephemeral=True)
            return
        # Defer first: the answer waits for Redis, and Discord wants an acknowledgement within 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel = persona_channel(place)
        with self._replies.bind(conversation=str(channel)):
            replies = [await self._engine.persona_command(channel, text, admin=admin) for text in commands]
            log.info("discord.persona_command", user=sender.user_id, channel=place.channel_id,
                     command=commands[0].split()[0], admin=admin)
        # A refusal or an unavailable store is said once, not once per option.
        await interaction.edit_original_response(content=_fit("\n".join(dict.fromkeys(replies))))

    def _persona_admin(self, interaction: discord.Interaction[discord.Client]) -> bool:
        """Manage Server here (the member's resolved permissions, as Discord sent them with the
        interaction), or listed in the bot definition's `[personas] admins`."""
        if str(interaction.user.id) in self._engine.profile.personas.admins:
            return True
        permissions = interaction.permissions
        return interaction.guild_id is not None and (permissions.manage_guild or permissions.administrator)

    async def _reset_command(self, interaction: discord.Interaction[discord.Client]) -> None:
        self._replies.track(asyncio.current_task())
        sender = sender_of(interaction.user)
        place = self._interaction_place(interaction)
        refusal = self._config.access.check(sender, place)
        if refusal is not None:
            await interaction.response.send_message(refusal.value, ephemeral=True)
            return
        # Defer first: the reset waits for a turn in progress in this conversation, and Discord
        # wants an interaction acknowledged within 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        shared = self._shared(place)
        latest = None
        if self._is_chain_channel(place, shared):
            latest = await self._index.conversation_of(
                self.name, latest_ref(place.channel_id, sender.user_id))
        conversation = command_conversation(place, shared=shared, latest=latest)
        if conversation is None:
            await interaction.edit_original_response(content=NOTHING_TO_RESET)
            return
        message = command_message(
            bot=self.name, interaction_id=interaction.id, conversation=conversation, sender=sender,
            command=Command.RESET, received_at=interaction.created_at.timestamp(), multi_user=not place.is_dm,
        )
        with self._replies.bind(conversation=str(conversation)):
            await self._engine.reset(message, InteractionReplySink(interaction))

    # -- internals --------------------------------------------------------------------------

    def _make_client(self) -> discord.Client:
        intents = discord.Intents.none()
        intents.guilds = True  # guild, channel, thread and role caches; slash commands in guilds
        intents.guild_messages = True  # mentions and replies in servers
        intents.dm_messages = True
        intents.guild_reactions = True  # 👍 / 👎 on answers (not privileged)
        intents.dm_reactions = True
        # Privileged, and only needed to read messages that do not mention the bot.
        intents.message_content = bool(self._config.respond_to_all)
        trace = rate_limit_trace(self._pacer)
        timeout = self._config.guild_ready_timeout_s
        if self._config.shard_count is not None:
            if self._config.shard_ids is None:  # every shard in this process
                return discord.AutoShardedClient(
                    intents=intents, allowed_mentions=ALLOWED_MENTIONS, http_trace=trace,
                    guild_ready_timeout=timeout, shard_count=self._config.shard_count,
                )
            return discord.AutoShardedClient(
                intents=intents, allowed_mentions=ALLOWED_MENTIONS, http_trace=trace,
                guild_ready_timeout=timeout, shard_count=self._config.shard_count,
                shard_ids=list(self._config.shard_ids),
            )
        return discord.Client(intents=intents, allowed_mentions=ALLOWED_MENTIONS, http_trace=trace,
                              guild_ready_timeout=timeout)

    async def _stay_connected(self) -> None:
        try:
            await self._client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            log.error("discord.intent_not_enabled", **self._log_context(),
                      hint="respond_to_all needs the Message Content intent: enable it in the Developer "
                           "Portal (Bot → Privileged Gateway Intents) or remove respond_to_all")
        except Exception:
            log.exception("discord.connection_failed", **self._log_context())

    def _log_context(self) -> dict[str, object]:
        """What every log line of this bot carries (the engine adds `conversation` and `model`)."""
        return self._replies.log_context

    def _tell(self, message_id: int, outcome: str) -> None:
        if self._observer is not None:
            self._observer.message_handled(message_id, outcome)


def _fit(text: str) -> str:
    """A command reply within Discord's message limit."""
    return text if len(text) <= MAX_COMMAND_REPLY_CHARS else text[: MAX_COMMAND_REPLY_CHARS - 1] + "…"
