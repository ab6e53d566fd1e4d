"""Slack wire payloads → core values: pure functions, no I/O.

Which events a bot ignores (`drop_reason`), which conversation a message belongs to
(`conversation_for`), where the reply goes (`reply_target`), what the model reads (`model_text`),
how a thread read for seeding becomes `ChatMessage`s (`thread_to_seed`), which reactions are votes
(`vote_for`) and which channel a slash command speaks for (`command_channel`). Raw payloads are
TypedDicts here and go no further than this package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from core.feedback import Vote
from core.types import (
    Attachment,
    Author,
    AuthorResolver,
    ChatMessage,
    ConversationKey,
    IncomingMessage,
    SeedLoader,
)

PLATFORM = "slack"
MESSAGE_EVENT_TYPES = frozenset({"app_mention", "message"})
REACTION_EVENT_TYPES = frozenset({"reaction_added", "reaction_removed"})  # 👍 / 👎 feedback
HANDLED_EVENT_TYPES = MESSAGE_EVENT_TYPES | REACTION_EVENT_TYPES
# Reaction names that are votes (Slack names emoji by their short name; `+1` and `thumbsup` are one
# emoji, and a skin tone is appended as `::skin-tone-N`).
VOTES = {"+1": Vote.UP, "thumbsup": Vote.UP, "-1": Vote.DOWN, "thumbsdown": Vote.DOWN}
# Message subtypes that are still a person writing to the bot; every other subtype (edits, deletes,
# joins, bot_message, channel topic changes…) is ignored.
USER_MESSAGE_SUBTYPES = frozenset({"file_share", "thread_broadcast"})
USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
CHANNEL_MENTION = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
SPECIAL_MENTION = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")


class SlackFile(TypedDict, total=False):
    """One of a message event's `files`, as far as we read it (https://api.slack.com/types/file)."""

    id: str
    name: str
    title: str
    mimetype: str
    filetype: str
    size: int
    mode: str  # "hosted", "external", "snippet", "post", "tombstone" (deleted), "hidden_by_limit"
    is_external: bool
    url_private: str
    url_private_download: str
    file_access: str  # "check_file_info": the event carries only the id; files.info has the rest


class ReactionItem(TypedDict, total=False):
    """What a reaction is on: a message (`type`, `channel`, `ts`); files are no longer reported."""

    type: str
    channel: str
    ts: str


class SlackEvent(TypedDict, total=False):
    """The `event` of an Events API callback (app_mention, message, reaction_added/removed), as far
    as we read it."""

    type: str
    subtype: str
    user: str
    bot_id: str
    text: str
    ts: str
    thread_ts: str
    channel: str
    channel_type: str  # "im", "channel", "group", "mpim"; absent on app_mention
    team: str
    files: list[SlackFile]  # app_mention and message (subtype file_share) with attachments
    reaction: str  # reaction_added / reaction_removed: the emoji's name, e.g. "+1::skin-tone-3"
    item: ReactionItem  # reaction_added / reaction_removed
    item_user: str  # reaction_added / reaction_removed: who wrote the message reacted to


class EventCallback(TypedDict, total=False):
    """An Events API `event_callback` body (also the payload of a Socket Mode `events_api` envelope)."""

    type: str
    team_id: str
    api_app_id: str
    event_id: str
    event_time: int
    event: SlackEvent


class SlashCommand(TypedDict, total=False):
    """A slash command request (form-encoded over HTTP; the payload of a Socket Mode
    `slash_commands` envelope): https://api.slack.com/interactivity/slash-commands."""

    command: str
    text: str
    user_id: str
    channel_id: str
    team_id: str
    api_app_id: str
    response_url: str
    trigger_id: str


class ThreadMessage(TypedDict, total=False):
    """One message of a `conversations.replies` answer."""

    ts: str
    user: str
    bot_id: str
    text: str
    subtype: str
    reply_count: int  # on a thread's opening message only


@dataclass(frozen=True)
class SlackIdentity:
    """Who the bot is in its workspace, learned at start from `auth.test` and `bots.info`."""

    team_id: str
    bot_user_id: str
    bot_id: str
    app_id: str


@dataclass(frozen=True)
class ReplyTarget:
    """Where one reply goes and whom it answers."""

    channel: str
    thread_ts: str | None  # the thread to reply in; None: in place (a DM outside a thread)
    source_ts: str  # the user's message: the working reaction goes on it
    team_id: str
    user_id: str
    assistant_thread: bool  # a DM thread: the working signal is assistant.threads.setStatus


def as_callback(body: Mapping[str, Any]) -> EventCallback:
    """The body Bolt hands a listener, typed."""
    return cast(EventCallback, body)


def drop_reason(body: Mapping[str, Any], me: SlackIdentity) -> str | None:
    """Why the bot ignores this request, or None to handle it. Only event callbacks are judged;
    anything else (URL verification, ssl_check) is Bolt's."""
    if body.get("type") != "event_callback":
        return None
    if body.get("api_app_id") != me.app_id:
        return "other_app"
    if not _for_my_team(body, me):
        return "other_team"
    event = body.get("event")
    if not isinstance(event, dict) or event.get("type") not in HANDLED_EVENT_TYPES:
        return "unhandled_event"
    if event.get("type") in REACTION_EVENT_TYPES:
        return _reaction_drop_reason(event, me)
    subtype = event.get("subtype")
    if subtype is not None and subtype not in USER_MESSAGE_SUBTYPES:
        return f"subtype_{subtype}"
    if event.get("user") == me.bot_user_id or (event.get("bot_id") and event.get("bot_id") == me.bot_id):
        return "self"
    if event.get("bot_id") or event.get("bot_profile"):
        return "other_bot"
    if not event.get("user") or not event.get("channel") or not event.get("ts"):
        return "incomplete"
    if not all(isinstance(event.get(f), str) for f in ("user", "channel", "ts")) or not isinstance(
        event.get("text", ""), str
    ):
        return "malformed"
    return None


def _reaction_drop_reason(event: Mapping[str, Any], me: SlackIdentity) -> str | None:
    """Reactions pass only when they can be a vote: a person's 👍 or 👎 on a message. Whether the
    message is one of the bot's answers is the engine's to say (`ConversationEngine.vote`)."""
    if event.get("user") == me.bot_user_id:
        return "self"  # the bot's own working reaction (👀) and anything else it adds
    item = event.get("item")
    if not isinstance(item, dict) or item.get("type") != "message":
        return "not_a_message"
    if not all(isinstance(v, str) and v for v in (event.get("user"), item.get("channel"), item.get("ts"))):
        return "incomplete"
    if not isinstance(event.get("reaction"), str) or vote_for(event["reaction"]) is None:
        return "not_a_vote"
    return None


def vote_for(reaction: str) -> Vote | None:
    """The vote a reaction casts (`+1`, `thumbsup`, `-1`, `thumbsdown`, any skin tone), or None."""
    return VOTES.get(reaction.split("::", 1)[0])


def _for_my_team(body: Mapping[str, Any], me: SlackIdentity) -> bool:
    """Whether the event was delivered for the workspace the bot's token belongs to: Slack lists the
    installations an event is for in `authorizations` (a Slack Connect channel may carry another
    team's `team_id`); without that list, the event's own `team_id` decides."""
    authorizations = body.get("authorizations")
    if isinstance(authorizations, list) and authorizations:
        return any(isinstance(a, dict) and a.get("team_id") == me.team_id for a in authorizations)
    return body.get("team_id") == me.team_id


def is_direct_message(event: SlackEvent) -> bool:
    """A 1:1 DM with the bot (app_mention events carry no channel_type; DM ids start with D)."""
    return event.get("channel_type") == "im" or event.get("channel", "").startswith("D")


def in_existing_thread(event: SlackEvent) -> bool:
    """The message is a reply inside a thread (not a thread's first message)."""
    thread_ts = event.get("thread_ts")
    return bool(thread_ts) and thread_ts != event.get("ts")


def mentions(text: str, user_id: str) -> bool:
    return any(match.group(1) == user_id for match in USER_MENTION.finditer(text))


def conversation_for(event: SlackEvent, team_id: str) -> ConversationKey:
    """The thread in channels (a top-level mention starts one at its own ts); in a DM the thread if
    there is one, else the DM itself."""
    channel, ts = event["channel"], event["ts"]
    thread_ts = event.get("thread_ts")
    if is_direct_message(event):
        return ConversationKey(PLATFORM, team_id, channel, thread_ts)
    return ConversationKey(PLATFORM, team_id, channel, thread_ts or ts)


def reply_target(event: SlackEvent, team_id: str) -> ReplyTarget:
    """Channels: always in the message's thread. DMs: in place, or in the thread if the user wrote in one."""
    dm = is_direct_message(event)
    thread_ts = event.get("thread_ts")
    return ReplyTarget(
        channel=event["channel"],
        thread_ts=thread_ts if dm else (thread_ts or event["ts"]),
        source_ts=event["ts"],
        team_id=team_id,
        user_id=event.get("user", ""),
        assistant_thread=dm and bool(thread_ts),
    )


def model_text(text: str, bot_user_id: str) -> str:
    """What the model reads: the bot's own mention removed, Slack's markup made plain."""
    text = USER_MENTION.sub(
        lambda m: "" if m.group(1) == bot_user_id else f"@{m.group(2) or m.group(1)}", text)
    text = CHANNEL_MENTION.sub(lambda m: f"#{m.group(2) or m.group(1)}", text)
    text = SPECIAL_MENTION.sub(lambda m: f"@{m.group(1)}", text)
    text = LINK.sub(_plain_link, text)
    # Slack escapes &, < and > that the user typed (`&lt;!channel&gt;`): < and > stay escaped, so a
    # model asked to "repeat after me" is never handed a live `<!channel>` to echo; `&amp;` reads as
    # `&` (what it leaves behind, such as `&lt;`, is still inert).
    text = text.replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _plain_link(match: re.Match[str]) -> str:
    url, label = match.group(1), match.group(2)
    if url.startswith("mailto:"):
        return label or url[len("mailto:"):]
    return f"{label} ({url})" if label and label != url else url


def files_of(event: SlackEvent) -> list[SlackFile]:
    """The files a message event carries (malformed entries left out)."""
    files = event.get("files")
    if not isinstance(files, list):
        return []
    return [f for f in files if isinstance(f, dict)]


def command_channel(command: SlashCommand, team_id: str) -> ConversationKey:
    """The channel a slash command was typed in: personas are per channel, never per thread."""
    return ConversationKey(PLATFORM, command.get("team_id") or team_id, command.get("channel_id", ""))


def message_identity(event: SlackEvent) -> str:
    """The engine's dedupe id of a message: the message itself (channel and ts), not the event that
    carried it. A retried event and the `app_mention` / `message` twins of one message share it, so
    the message is answered once whichever of them arrives first, on whichever replica."""
    return f"msg:{event['channel']}:{event['ts']}"


def incoming_message(
    bot: str, body: EventCallback, me: SlackIdentity, *, author_name: str, seed: SeedLoader | None,
    received_at: float, resolve_author: AuthorResolver | None = None,
    attachments: tuple[Attachment, ...] = (),
) -> IncomingMessage:
    """The engine's view of one event; `seed` is offered when the bot was called into an existing
    thread, `attachments` are the event's files (`files.SlackFiles`)."""
    event = body["event"]
    team_id = body.get("team_id") or me.team_id
    return IncomingMessage(
        bot=bot,
        platform=PLATFORM,
        conversation=conversation_for(event, team_id),
        author=Author(event["user"], author_name),
        text=model_text(event.get("text", ""), me.bot_user_id),
        event_id=message_identity(event),
        received_at=received_at,
        multi_user=not is_direct_message(event),
        seed=seed,
        resolve_author=resolve_author,
        attachments=attachments,
    )


def thread_to_seed(
    messages: Sequence[ThreadMessage], me: SlackIdentity, *, before_ts: str, names: Mapping[str, str],
    limit: int,
) -> list[ChatMessage]:
    """The last `limit` messages of a thread before the one that called the bot: the bot's own as
    `assistant`, everyone else's as `user` with their name. A thread a user reset is never read for
    this: the engine seeds only a conversation with neither history nor a reset marker."""
    seeded: list[ChatMessage] = []
    for message in messages:
        ts = message.get("ts", "")
        if not ts or _ts_order(ts) >= _ts_order(before_ts):
            continue
        subtype = message.get("subtype")
        if subtype is not None and subtype not in USER_MESSAGE_SUBTYPES and subtype != "bot_message":
            continue
        text = model_text(message.get("text", ""), me.bot_user_id)
        if not text:
            continue
        if message.get("bot_id") == me.bot_id or message.get("user") == me.bot_user_id:
            seeded.append(ChatMessage("assistant", text))
        else:
            author = message.get("user") or message.get("bot_id") or "someone"
            seeded.append(ChatMessage("user", text, name=names.get(author, author)))
    return seeded[-limit:]


def _ts_order(ts: str) -> tuple[int, int]:
    """Slack timestamps compare as (seconds, microseconds), not as strings or floats."""
    seconds, _, fraction = ts.partition(".")
    try:
        return int(seconds), int(fraction.ljust(6, "0")[:6] or "0")
    except ValueError:
        return (0, 0)
