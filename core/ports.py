"""Every Protocol of lunos-bots, each with who relies on it.

Implementations satisfy these structurally; nothing here imports a platform library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.types import ConversationKey, ReplyInfo, Turn, Usage


@dataclass(frozen=True)
class RenderLimits:
    """How a platform wants replies shaped; `core.streaming` renders within them.

    `max_chars` is the hard limit of one message; the renderer splits at `split_chars` (lower, to
    leave room for a closing code fence and the streaming indicator). `min_edit_interval_s` spaces
    updates of one message. `placeholder` (or None) is posted before the first token arrives.
    `close_open_fences` closes an unclosed code fence in every in-progress update so it renders;
    a terminal that prints only what was added sets it False.

    `grow_by_edits=False` is the posts-only shape, for a reply that may not spend the platform's
    edit budget (Slack under load): nothing shown is ever edited; completed paragraphs, lines or
    sentences go out as new messages, the first `first_chunk_after_s` after the first text and the
    next at least `min_edit_interval_s` apart, and the rest with the final text.
    """

    max_chars: int
    split_chars: int
    min_edit_interval_s: float
    placeholder: str | None = None
    streaming_indicator: str = ""
    close_open_fences: bool = True
    grow_by_edits: bool = True
    first_chunk_after_s: float = 0.5


class ReplySink(Protocol):
    """Where one reply goes: a Slack thread, a Discord channel, a terminal.

    Relied on by `core.reply.ReplyStream`, which calls `start` once, `post`/`edit` as the renderer
    decides (at most one call in flight, newest text wins) and `finish` once at the end. An adapter
    paces `edit` itself (per-workspace or per-channel budgets) by awaiting inside it, and absorbs
    platform errors it can recover from (its retries are the only ones within a turn); what it
    cannot it raises as `PlatformError`, and the reply journal takes over.

    The repost rule: core never posts a message's text anew because an edit failed. A sink that
    can no longer edit a message at all (Discord's edit window) replaces it itself: it posts the
    text as a new message and deletes the old one, so one message remains.
    """

    @property
    def limits(self) -> RenderLimits: ...

    async def start(self) -> None:
        """Show that the bot is working (typing, reaction, status), before any text exists."""

    async def post(self, text: str) -> str:
        """Post a new message of this reply and return the platform's reference to it."""

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        """Replace the text of a message this sink posted. `final` is its last update."""

    async def finish(self) -> None:
        """The reply is complete: clear the working signal."""

    def footer(self, info: ReplyInfo) -> str | None:
        """A short note appended to the last message (model used, context trimmed), or None."""

    def journal_target(self) -> dict[str, str] | None:
        """Where this reply lives, in words the adapter's `Finaliser` understands (channel,
        thread…), for the reply journal; None for a reply nobody else could finish (a terminal)."""


class Finaliser(Protocol):
    """Reaches a reply again from its journal `target`, in any process running the bot. Relied on
    by `core.journal.JournalSweeper`, which finalises replies whose owner died or gave up; each
    platform adapter implements it. One attempt per call: the sweeper retries with backoff. Errors
    are `PlatformError`, or `ReplyUndeliverable` when no retry can help (the message is gone)."""

    async def post(self, target: dict[str, str], text: str) -> str:
        """Post a message of the reply; returns its ref."""

    async def edit(self, target: dict[str, str], ref: str, text: str) -> None:
        """Make message `ref` show `text` (its final state)."""

    async def done(self, target: dict[str, str]) -> None:
        """The reply is final: clear what still says the bot is working (best effort)."""


class HistoryStore(Protocol):
    """Conversation memory. Relied on by `ConversationEngine`; `core.history.RedisHistory` implements it."""

    async def load(self, key: ConversationKey) -> list[Turn]:
        """The stored turns, oldest first. Raises HistoryUnavailable when the store is down."""

    async def append(self, key: ConversationKey, turns: Sequence[Turn]) -> int:
        """Append turns, trim, refresh the TTL in one round trip; returns how many were dropped."""

    async def clear(self, key: ConversationKey) -> None:
        """Forget the conversation, remembering that it was reset."""

    async def revise(self, key: ConversationKey, reply: str, content: str) -> bool:
        """Replace the stored answer of journal reply `reply` with what the user actually saw (its
        final text never reached them). False when it is no longer stored."""

    async def exists(self, key: ConversationKey, *, or_in_progress: bool = False) -> bool:
        """Whether the bot has talked in this conversation (turns stored, or reset by a user), or
        with `or_in_progress` is answering a turn there right now (any replica). One round trip."""


class Coordination(Protocol):
    """Cross-replica coordination. Relied on by `ConversationEngine`; `core.coordination` implements it."""

    async def claim_event(self, bot: str, event_id: str) -> bool:
        """True the first time an event id is seen (across replicas), False for a repeat."""

    def conversation_lock(self, bot: str, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        """Held while one turn of the conversation is answered, so turns run in order."""



class UsageRecorder(Protocol):
    """Token accounting per app ID, day and model. Relied on by `ConversationEngine` and the CLI."""

    async def record(self, app_id: str, model: str, usage: Usage | None, *, fallback: bool = False) -> None:
        """One answered reply (`fallback`: a fallback model answered it)."""

    async def record_failure(self, app_id: str, model: str) -> None:
        """One turn no model could answer."""



class BotRuntime(Protocol):
    """A running bot on one platform. Relied on by `bots.runner`, which starts every bot that has
    its credentials, reports `ready` on /healthz and stops them on SIGTERM. Adapters implement it
    (`adapters.console.ConsoleBot`, `adapters.slack.SlackBot`, `adapters.discord.DiscordBot`)."""

    @property
    def name(self) -> str: ...

    @property
    def ready(self) -> bool:
        """Connected and able to answer."""

    async def start(self) -> None:
        """Connect and begin answering; returns once started (work continues in tasks)."""

    async def stop(self) -> None:
        """Stop taking new messages, finish or finalise replies in flight, disconnect."""


@runtime_checkable
class JournaledRuntime(Protocol):
    """A runtime whose replies another process can finish from the reply journal. Relied on by
    `bots.runner`, which adds each started one to the `JournalSweeper`; the Slack and Discord bots
    implement it (a terminal's replies cannot be reached again)."""

    @property
    def name(self) -> str: ...

    def finaliser(self) -> Finaliser:
        """How the journal reaches this bot's replies (once started)."""


@runtime_checkable
class EndingRuntime(Protocol):
    """A runtime whose session ends on its own (a terminal at end of input). Relied on by
    `bots.runner`: when every bot of the process is one, `run` ends when they have."""

    @property
    def finished(self) -> asyncio.Event: ...


class PlatformCallObserver(Protocol):
    """Told about every API call an adapter makes to its platform. Relied on by the adapters'
    call counters (`adapters.slack.calls`, `adapters.discord.calls`); `bots.metrics.Metrics`
    implements it with Prometheus counters."""

    def platform_call(self, bot: str, platform: str, method: str, status: int | str) -> None: ...


class TurnObserver(Protocol):
    """Told about every finished turn. Relied on by `ConversationEngine`; `bots.metrics` implements
    it with Prometheus counters, tests with a list."""

    def turn_finished(self, bot: str, status: str, model: str | None, latency_s: float,
                      fallback_used: bool) -> None: ...


class MessageObserver(Protocol):
    """Told what became of every message an adapter received, once the adapter is done with it.
    Relied on by `adapters.discord.DiscordBot` (its `observer`), which calls it; tests implement it
    to wait for an answer without sleeping, and it can feed metrics. `outcome` is the engine's turn
    status ("answered", "interrupted", "command", "failed", "duplicate"; "interrupted" also for a
    reply cut short at shutdown) or the adapter's own verdict: "refused", "refused_quietly",
    "ignored_bot", "ignored_not_addressed", "ignored_cannot_send", "ignored_stopping",
    "ignored_not_ready", or "crashed" (a bug, logged)."""

    def message_handled(self, message_id: int, outcome: str) -> None: ...
