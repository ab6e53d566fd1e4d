"""discord.py objects → core values, in pure functions (no I/O; at most a read of discord.py's cache).

What lives here: whether a message concerns the bot (`addressing`), the text with the bot's
mention stripped, where it was sent (`place_of`) and who sent it (`sender_of`), which conversation
it belongs to (`conversation_for`), and the `IncomingMessage` the engine gets. The bot looks up the
message index (I/O) first and passes what it found in, so every rule stays testable here.

Conversations: a DM is one conversation (`discord:dm:<channel>`); a thread is one
(`discord:<guild>:<thread>`); in a plain channel every mention starts a reply chain rooted at that
message (`discord:<guild>:<channel>:<root message>`) and replies continue it. A channel where the
bot answers everything (`respond_to_all`), or one listed in `channel_memory`, is one conversation,
like a thread ("shared"): there every mention continues the channel's history.

Also here: which reaction is a vote (`vote_of`), and the persona command's words from `/persona`'s
options (`persona_set_commands`, `persona_unset_command`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import discord

from adapters.discord.access import Place, Sender
from core.feedback import Vote
from core.types import Attachment, Author, Command, ConversationKey, IncomingMessage

PLATFORM = "discord"
DM_WORKSPACE = "dm"  # DMs belong to no guild; their channel id alone identifies them
THREAD_CHANNEL_TYPES = frozenset({
    discord.ChannelType.public_thread, discord.ChannelType.private_thread, discord.ChannelType.news_thread,
})
# Only what a person types; pins, joins, thread-created notices and the like are not questions.
CONVERSATIONAL_MESSAGE_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
MENTION_PATTERN = re.compile(r"[ \t]*<@[!&]?(\d+)>[ \t]*")
# 👍 / 👎 with any skin tone (Fitzpatrick modifiers U+1F3FB–U+1F3FF) and an optional emoji
# presentation selector (U+FE0F): Discord names a unicode reaction by the emoji as picked.
VOTES = {"\N{THUMBS UP SIGN}": Vote.UP, "\N{THUMBS DOWN SIGN}": Vote.DOWN}
EMOJI_MODIFIERS = re.compile("[\U0001F3FB-\U0001F3FF\uFE0F]")

AddressReason = Literal["dm", "mention", "reply", "channel"]


@dataclass(frozen=True)
class Addressed:
    """Why a message concerns the bot, and what it says with the bot's mention removed."""

    reason: AddressReason
    text: str
    replied_to: int | None  # the message it replies to, if any
    # For a reply to the bot: where that bot message's own chain started, as far as the event tells
    # (its reference, else itself). Used only when the message index does not know the message.
    fallback_root: int | None = None


def message_ref(message_id: int) -> str:
    """The message index's name for a Discord message (snowflakes are globally unique)."""
    return f"{PLATFORM}:msg:{message_id}"


def latest_ref(channel_id: int, user_id: int) -> str:
    """The message index's name for "the chain this user last talked in, in this channel"."""
    return f"{PLATFORM}:latest:{channel_id}:{user_id}"


def strip_mentions(content: str, ids: frozenset[int]) -> str:
    """`content` without mentions of `ids` (the bot's user and its managed role); other mentions stay.

    A mention between words leaves one space; at a line's edge it leaves nothing, so code blocks
    and line breaks after "@bot" survive.
    """

    def replace(match: re.Match[str]) -> str:
        if int(match.group(1)) not in ids:
            return match.group(0)
        before = content[match.start() - 1] if match.start() > 0 else "\n"
        after = content[match.end()] if match.end() < len(content) else "\n"
        return "" if "\n" in (before, after) else " "

    return MENTION_PATTERN.sub(replace, content).strip()


def place_of(channel: object, *, channel_id: int, guild_id: int | None) -> Place:
    """Where a message or command was sent. `channel` may be any discord.py channel object, a
    `PartialMessageable` (not cached) or None (an interaction in an uncached channel)."""
    if guild_id is None:
        return Place(guild_id=None, channel_id=channel_id)
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        return Place(guild_id, channel.id, parent_id=channel.parent_id,
                     category_id=parent.category_id if parent is not None else None, is_thread=True)
    if isinstance(channel, discord.abc.GuildChannel):
        return Place(guild_id, channel_id, category_id=channel.category_id)
    if isinstance(channel, discord.PartialMessageable):
        return Place(guild_id, channel_id, is_thread=channel.type in THREAD_CHANNEL_TYPES)
    return Place(guild_id, channel_id)


def sender_of(author: discord.User | discord.Member, *, webhook: bool = False) -> Sender:
    """Who wrote a message. Webhooks count as bots: they are other programs, not people."""
    roles = frozenset(r.id for r in author.roles) if isinstance(author, discord.Member) else frozenset()
    return Sender(user_id=author.id, display_name=author.display_name, role_ids=roles,
                  is_bot=author.bot or webhook)


def is_direct_message(message: discord.Message) -> bool:
    """A DM with the bot, by the channel's type: a guild message whose guild is not cached (during an
    outage) also has no `guild`, and must not be taken for a DM."""
    channel = message.channel
    if isinstance(channel, discord.DMChannel | discord.GroupChannel):
        return True
    return isinstance(channel, discord.PartialMessageable) and channel.guild_id is None and channel.type in (
        discord.ChannelType.private, discord.ChannelType.group)


def bot_can_send(channel: object, me: discord.Member | None) -> bool:
    """Whether the bot may answer in `channel`, as far as the cache tells (True when it cannot tell:
    then Discord's answer decides). Checked before asking the model, so a muted bot neither spends
    tokens nor piles up 403s, which count towards Discord's invalid-request ban. An answer is a
    reply, and Discord refuses replies (160002) from a bot that may not read the channel's history."""
    if me is None:
        return True
    try:
        if isinstance(channel, discord.Thread):
            permissions = channel.permissions_for(me)
            send = permissions.send_messages_in_threads
        elif isinstance(channel, discord.abc.GuildChannel):
            permissions = channel.permissions_for(me)
            send = permissions.send_messages
        else:
            return True
    except discord.ClientException:  # a thread whose parent is not cached
        return True
    return permissions.read_messages and permissions.read_message_history and send


def replied_message_id(message: discord.Message) -> int | None:
    """The message this one replies to (in the same channel); None for forwards and non-replies."""
    reference = message.reference
    if reference is None or reference.type == discord.MessageReferenceType.forward:
        return None
    if reference.channel_id != message.channel.id:
        return None
    return reference.message_id


def addressing(
    message: discord.Message, *, bot_id: int, bot_role_id: int | None, answer_all: bool
) -> Addressed | None:
    """Whether (and why) the bot should answer `message`; None when it is not for the bot.

    Without the message-content intent Discord sends guild messages with empty content unless they
    mention the bot, so a reply to the bot with its ping turned off arrives empty: it is treated as
    not addressed (there is nothing to answer) and the README says when to enable the intent.
    """
    if message.type not in CONVERSATIONAL_MESSAGE_TYPES:
        return None
    ids = frozenset({bot_id} | ({bot_role_id} if bot_role_id is not None else set()))
    text = strip_mentions(message.content, ids)
    replied_to = replied_message_id(message)
    if is_direct_message(message):
        return Addressed("dm", text, replied_to)
    if message.guild is None:
        return None  # a guild message while its guild is unavailable: not a DM, and no place known
    mentioned = any(u.id == bot_id for u in message.mentions) or (
        bot_role_id is not None and any(r.id == bot_role_id for r in message.role_mentions)
    )
    resolved = message.reference.resolved if message.reference is not None else None
    to_bot = replied_to is not None and isinstance(resolved, discord.Message) and resolved.author.id == bot_id
    fallback_root = None
    if to_bot and isinstance(resolved, discord.Message):
        own_reference = resolved.reference.message_id if resolved.reference is not None else None
        fallback_root = own_reference or resolved.id
    if mentioned:
        return Addressed("mention", text, replied_to, fallback_root)
    if not text and not message.attachments:
        return None  # content hidden: without the message-content intent, files are hidden too
    if to_bot:
        return Addressed("reply", text, replied_to, fallback_root)
    if answer_all:
        return Addressed("channel", text, replied_to)
    return None


def persona_channel(place: Place) -> ConversationKey:
    """The channel whose persona applies in `place`: a thread follows its parent channel, as a
    Slack thread follows its channel (`core.personas` keeps one persona per channel)."""
    if place.is_thread and place.parent_id is not None and not place.is_dm:
        return ConversationKey(PLATFORM, str(place.guild_id), str(place.parent_id))
    return channel_conversation(place)


def channel_conversation(place: Place) -> ConversationKey:
    """The conversation key of `place` itself, with no reply chain: a DM, a thread, a shared channel,
    or the channel a persona belongs to (`core.personas.channel_of`)."""
    if place.is_dm:
        return ConversationKey(PLATFORM, DM_WORKSPACE, str(place.channel_id))
    return ConversationKey(PLATFORM, str(place.guild_id), str(place.channel_id))


def conversation_for(
    place: Place, addressed: Addressed, message_id: int, *, shared: bool,
    continued: ConversationKey | None,
) -> ConversationKey:
    """The conversation of an addressed message. `continued` is what the message index said about
    the replied-to message (or the user's latest chain, for a typed `reset`); it is used only for a
    chain in this very channel. `shared`: the channel is one conversation (`respond_to_all` or
    `channel_memory`)."""
    if place.is_dm or place.is_thread or shared:
        return channel_conversation(place)
    guild = str(place.guild_id)
    if (
        continued is not None and continued.platform == PLATFORM and continued.workspace == guild
        and continued.channel == str(place.channel_id) and continued.thread
    ):
        return continued
    root = addressed.fallback_root or message_id
    return ConversationKey(PLATFORM, guild, str(place.channel_id), str(root))


def command_conversation(
    place: Place, *, shared: bool, latest: ConversationKey | None
) -> ConversationKey | None:
    """The conversation a slash command in `place` is about: the DM, the thread, the shared
    channel, else the user's latest reply chain here (None if there is none)."""
    if place.is_dm or place.is_thread or shared:
        return channel_conversation(place)
    return latest


def incoming_message(
    message: discord.Message, *, bot: str, conversation: ConversationKey, text: str, sender: Sender,
    attachments: tuple[Attachment, ...] = (), persona: ConversationKey | None = None,
) -> IncomingMessage:
    """The engine's view of `message`. The message id is the dedupe key: Discord redelivers events
    after a gateway resume, and a redelivered message must not be answered twice. In a guild each
    user turn is attributed by name (`multi_user`): several people may share one conversation."""
    return IncomingMessage(
        bot=bot, platform=PLATFORM, conversation=conversation,
        author=Author(str(sender.user_id), sender.display_name), text=text,
        event_id=f"message:{message.id}", received_at=message.created_at.timestamp(),
        multi_user=message.guild is not None, attachments=attachments, persona_channel=persona,
    )


def command_message(
    *, bot: str, interaction_id: int, conversation: ConversationKey, sender: Sender, command: Command,
    received_at: float, multi_user: bool,
) -> IncomingMessage:
    """The engine's view of a slash command (for `reset`): the command itself, no text."""
    return IncomingMessage(
        bot=bot, platform=PLATFORM, conversation=conversation,
        author=Author(str(sender.user_id), sender.display_name), text="",
        event_id=f"interaction:{interaction_id}", received_at=received_at, multi_user=multi_user,
        command=command,
    )


def vote_of(emoji: discord.PartialEmoji) -> Vote | None:
    """👍 / 👎 (any skin tone) as a vote; None for every other emoji, custom ones included."""
    if emoji.id is not None or not emoji.name:
        return None
    return VOTES.get(EMOJI_MODIFIERS.sub("", emoji.name))


def persona_set_commands(
    *, model: str | None, fallbacks: str | None, prompt: str | None
) -> list[str]:
    """`/persona set`'s options as `core.personas` commands, one per option given, in a fixed order
    (model, fallbacks, prompt). Fallbacks are model names separated by spaces or commas, or `none`."""
    given = {"model": model, "fallbacks": fallbacks, "prompt": prompt}
    return [f"set {field} {value.strip()}" for field, value in given.items()
            if value is not None and value.strip()]


def persona_unset_command(field: str) -> str:
    """`/persona unset`'s choice as a `core.personas` command."""
    return f"unset {field}"
