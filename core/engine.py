"""`ConversationEngine`: one incoming message in, one streamed reply out.

dedupe → lock → load history → `[system, *history, user]` → stream → render → save → usage.
The `reset` and `help` commands live here so every platform behaves the same (`IncomingMessage.command`,
parsed in `core.types`). This module must not know which platform it serves: adapters hand it an
`IncomingMessage` and a `ReplySink`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from core.attachments import ReadAttachments, read_attachments
from core.chat_api import ChatClient
from core.errors import (
    AllModelsFailed,
    AuthenticationFailed,
    ChatAPIError,
    EndpointNotFound,
    HistoryUnavailable,
    ModelNotFound,
    OutOfCredits,
    ReplyUndeliverable,
    RequestRejected,
)
from core.feedback import AnswerRecord, RedisFeedback, Vote, VoteOutcome
from core.journal import JournalEntry, ReplyJournal
from core.limits import Admission, Refusal, TurnLimiter
from core.personas import Persona, PersonaCommands, PersonaStore, channel_of
from core.ports import Coordination, HistoryStore, ReplySink, TurnObserver, UsageRecorder
from core.profile import BotProfile
from core.reply import ReplyStream
from core.tokens import TokenEstimator
from core.types import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    Command,
    ConversationKey,
    IncomingMessage,
    ReplyInfo,
    Turn,
)

log = structlog.get_logger(__name__)

RESET_REPLY = "Done — I've forgotten this conversation. The next message starts fresh."
INTERRUPTED_NOTE = "_(answer interrupted: the model stopped responding)_"
TRUNCATED_NOTE = "_(answer cut off at this bot's length limit)_"
NOTHING_READ_NOTE = "_(I couldn't read any of the files you sent)_"
# A model that finished without a word of answer (e.g. a reasoning model that only reasoned).
EMPTY_ANSWER_NOTE = "_(the model finished without an answer — try again or rephrase)_"
APOLOGY_RATE_LIMITED = "Sorry — the AI service is rate-limiting me right now. Please try again in a minute."
APOLOGY_UNAVAILABLE = "Sorry — the AI models are unavailable right now. Please try again shortly."
APOLOGY_BAD_KEY = "Sorry — the AI service rejected my API key, so I can't answer. An admin needs to fix it."
APOLOGY_BAD_MODEL = "Sorry — my configured model isn't available. An admin needs to check my model setting."
APOLOGY_OUT_OF_CREDITS = "Sorry — the AI service account is out of credits. An admin needs to top it up."
APOLOGY_BAD_ENDPOINT = (
    "Sorry — I'm pointed at the wrong AI service address. An admin needs to check LUNOS_BASE_URL.")
APOLOGY_REJECTED = "Sorry — the AI service rejected this request. Try rephrasing or `reset` the conversation."
APOLOGY_RESET_FAILED = "Sorry — my memory store is unavailable, so I couldn't reset. Try again soon."
# Bound in the log context at a turn's start (monotonic seconds); the log pipeline turns it into
# `latency_ms` on every line of the turn.
TURN_STARTED_AT = "turn_started_at"
AUTHOR_LOOKUP_TIMEOUT_S = 2.0  # a slow name lookup falls back to what the adapter knew
PERSONA_LOOKUP_TIMEOUT_S = 1.0  # a channel persona Redis cannot produce by then is not waited for
APOLOGY_INTERNAL = "Sorry — something went wrong on my side. Please try again."

# "deferred": answered and saved, but the platform did not take the final state within the turn;
# the reply journal delivers it (or, past its window, ends the reply with a note and counts that).
TurnStatus = Literal["answered", "interrupted", "duplicate", "command", "failed", "deferred", "refused"]


@dataclass(frozen=True)
class TurnOutcome:
    """What `handle` did, for adapters and tests."""

    status: TurnStatus
    result: ChatResult | None = None
    history_trimmed: bool = False
    degraded: bool = False  # Redis failed somewhere in this turn
    apology: str | None = None


def apology_for(error: BaseException) -> str:
    """One short sentence the user can act on, never a traceback."""
    if isinstance(error, OutOfCredits):
        return APOLOGY_OUT_OF_CREDITS
    if isinstance(error, AuthenticationFailed):
        return APOLOGY_BAD_KEY
    if isinstance(error, EndpointNotFound):
        return APOLOGY_BAD_ENDPOINT
    if isinstance(error, ModelNotFound):
        return APOLOGY_BAD_MODEL
    if isinstance(error, RequestRejected):
        return APOLOGY_REJECTED
    if isinstance(error, AllModelsFailed):
        last = error.attempts[-1].error if error.attempts else None
        if isinstance(last, RequestRejected):  # e.g. every model unknown: say what to fix
            return apology_for(last)
        return APOLOGY_RATE_LIMITED if error.rate_limited else APOLOGY_UNAVAILABLE
    if isinstance(error, ChatAPIError):
        return APOLOGY_UNAVAILABLE
    return APOLOGY_INTERNAL


class ConversationEngine:
    """Answers one bot's messages. One engine per bot; many adapters/sinks may call it at once."""

    def __init__(
        self,
        profile: BotProfile,
        *,
        chat: ChatClient,
        history: HistoryStore,
        coordination: Coordination,
        usage: UsageRecorder,
        estimator: TokenEstimator | None = None,
        observer: TurnObserver | None = None,
        journal: ReplyJournal | None = None,
        limits: TurnLimiter | None = None,
        personas: PersonaStore | None = None,
        feedback: RedisFeedback | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile
        self._chat = chat
        self._history = history
        self._coordination = coordination
        self._usage = usage
        self._estimator = estimator or TokenEstimator()
        self._observer = observer
        self._journal = journal
        self._limits = limits
        self._personas = personas
        self._persona_commands = PersonaCommands(profile, personas) if personas is not None else None
        self._feedback = feedback
        self._clock = clock
        self._wall_clock = wall_clock

    def help_text(self, persona: Persona | None = None) -> str:
        """What the bot is and does; with the channel's `persona`, what this channel changes."""
        p = persona.apply(self.profile) if persona is not None else self.profile
        text = (
            f"I'm **{p.name}**, an AI assistant (model `{p.model}`). Mention me or message me directly "
            f"and I'll answer; I remember this conversation (the last {p.history.max_messages} messages, "
            f"for {max(1, p.history.ttl_s // 86400)} days)."
        )
        if persona is not None:
            text += "\nThis channel's persona: " + "; ".join(persona.describe()) + "."
        if p.attachments.vision:
            text += "\nI can look at images and read text files you attach."
        else:
            text += "\nI can read text files you attach."
        return text + "\n• `reset` — forget this conversation\n• `help` — this message"

    async def help_for(self, conversation: ConversationKey) -> str:
        """`help_text` for a conversation, with its channel's persona."""
        return self.help_text(await self._persona_of(conversation))

    async def persona_command(self, conversation: ConversationKey, text: str, *, admin: bool) -> str:
        """A persona command (`show`, `set …`, `unset …`) in `conversation`'s channel; `admin`: the
        adapter decided the user may change it. One short reply, never an exception."""
        if self._persona_commands is None:
            return "Channel personas are not available for this bot."
        try:
            return await self._persona_commands.run(conversation, text, admin=admin)
        except Exception:  # a bug must not leave the user with nothing
            log.exception("persona.command_failed")
            return APOLOGY_INTERNAL

    async def vote(
        self, channel: str, ref: str, user: str, vote: Vote, *, added: bool, event_id: str | None = None
    ) -> VoteOutcome:
        """A user added or removed 👍 / 👎 (`vote`) on message `ref` in `channel`; counted only
        when the message holds one of this bot's answers (`core.feedback`). `event_id`: the
        platform's id of the reaction event, when it may send one twice (a late retry must not
        bring back a vote removed meanwhile). Never raises."""
        if self._feedback is None:
            return "unavailable"
        try:
            if event_id is not None and not await self._coordination.claim_event(
                    self.profile.name, f"reaction:{event_id}"):
                return "unchanged"
            return await self._feedback.vote(self.profile.name, channel, ref, user, vote, added=added)
        except Exception:  # a bug must not take the adapter's event loop down
            log.exception("feedback.vote_failed")
            return "unavailable"

    async def _persona_of(self, conversation: ConversationKey) -> Persona | None:
        """The channel's persona; none (the bot's own settings) when Redis is slow to say: a turn,
        or a platform's 3-second command deadline, must not wait on it."""
        if self._personas is None:
            return None
        try:
            async with asyncio.timeout(PERSONA_LOOKUP_TIMEOUT_S):
                return await self._personas.get(self.profile.name, channel_of(conversation))
        except TimeoutError:
            log.warning("persona.lookup_slow", note="answering with the bot's own settings")
            return None

    async def handle(self, message: IncomingMessage, sink: ReplySink) -> TurnOutcome:
        """Answer `message` through `sink`. Never raises for model or Redis trouble; the user sees
        an answer, a partial answer with a note, or a short apology, and never a placeholder."""
        started = self._clock()
        outcome = await self._handle(message, sink)
        if self._observer is not None:
            result = outcome.result
            self._observer.turn_finished(
                self.profile.name, outcome.status, result.model if result else None,
                self._clock() - started, bool(result and result.fallback_used),
            )
        return outcome

    async def _handle(self, message: IncomingMessage, sink: ReplySink) -> TurnOutcome:
        with structlog.contextvars.bound_contextvars(
            **self._turn_log_context(message),
        ):
            if not await self._coordination.claim_event(message.bot, message.event_id):
                log.info("turn.duplicate", event_id=message.event_id)
                return TurnOutcome(status="duplicate")
            command = message.command
            # Limits (`core.limits`) hold before anything is shown: a refused turn gets one short
            # message, no model call, nothing saved. Commands cost no model call and are never refused.
            admission: Admission | None = None
            if self._limits is not None and command is None:
                verdict = await self._limits.admit(message)
                if isinstance(verdict, Refusal):
                    await verdict.deliver(sink)
                    return TurnOutcome(status="refused")
                admission = verdict
            try:
                return await self._in_turn(message, sink, command)
            finally:
                if admission is not None:
                    await asyncio.shield(admission.release())

    async def _in_turn(
        self, message: IncomingMessage, sink: ReplySink, command: Command | None
    ) -> TurnOutcome:
        # The working signal goes up before waiting for the conversation's previous turn, so the
        # user sees at once that the bot heard them.
        reply = ReplyStream(sink, clock=self._clock, journal=self._journal, bot=self.profile.name,
                            conversation=message.conversation.to_json())
        await reply.open()
        outcome: TurnOutcome | None = None
        try:
            # The lock orders turns, not deliveries: it is released once the answer is saved and
            # every message of the reply is posted (posts fix the order in the conversation); the
            # final edits land after it, so the next turn's model request does not wait for them.
            async with self._coordination.conversation_lock(self.profile.name, message.conversation):
                if command is Command.RESET:
                    outcome = await self._reset(message, reply)
                elif command is Command.HELP:
                    reply.end(note=await self.help_for(message.persona_channel or message.conversation))
                    await reply.posts_landed()
                    outcome = TurnOutcome(status="command")
                else:
                    outcome = await self._answer(message, reply)
        finally:
            # Outside the lock. The note counts only when nothing above ended the reply (it
            # raised): never leave a placeholder.
            await asyncio.shield(reply.close(note=INTERRUPTED_NOTE if reply.text else APOLOGY_INTERNAL))
        assert outcome is not None  # every branch above sets it or raises
        if reply.final_failed and outcome.status in ("answered", "interrupted"):
            log.warning("turn.deferred", note="the final state did not land; the reply journal delivers it")
            return dataclasses.replace(outcome, status="deferred")
        return outcome

    async def has_history(self, conversation: ConversationKey) -> bool:
        """Whether this bot is in `conversation` (e.g. a Slack thread it answered in): it has
        turns there, a user reset it there (the store's reset marker), or a turn is being answered
        there right now. False when the store is down: the adapter then asks for a mention.

        A conversation with a reset marker is never seeded again (`IncomingMessage.seed`): what a
        user reset stays forgotten, without the adapter having to recognise the reset in the
        platform's own history."""
        try:
            return await self._history.exists(conversation, or_in_progress=True)
        except HistoryUnavailable:
            return False

    async def correct_abandoned(self, entry: JournalEntry) -> None:
        """The journal gave up on showing `entry`'s final text: history keeps what the user saw,
        with the note, not the answer they never got (`JournalSweeper`'s `on_abandoned`)."""
        conversation = ConversationKey.from_json(entry.conversation) if entry.conversation else None
        if conversation is None:
            return
        seen = "".join(entry.shown_with_note())
        try:
            found = await self._history.revise(conversation, entry.id, seen)
        except HistoryUnavailable as exc:
            log.warning("history.degraded", op="revise", error=str(exc))
            return
        log.info("turn.corrected", reply=entry.id, found=found, note="history holds what the user saw")

    async def reset(self, message: IncomingMessage, sink: ReplySink) -> TurnOutcome:
        """The `reset` command, for adapters with a native command (a Discord slash command)."""
        with structlog.contextvars.bound_contextvars(**self._turn_log_context(message)):
            return await self._in_turn(message, sink, Command.RESET)

    def _turn_log_context(self, message: IncomingMessage) -> dict[str, object]:
        """What every log line of a turn carries. `turn_started_at` lets the log pipeline add the
        turn's `latency_ms` to each line; `tokens` stays "unknown" until the API reports usage."""
        return {
            "bot": self.profile.name, "app_id": self.profile.app_id, "platform": message.platform,
            "conversation": str(message.conversation), "model": self.profile.model,
            "fallback_used": False, "tokens": "unknown", TURN_STARTED_AT: self._clock(),
        }

    async def _reset(self, message: IncomingMessage, reply: ReplyStream) -> TurnOutcome:
        try:
            await self._history.clear(message.conversation)
        except HistoryUnavailable as exc:
            log.warning("history.degraded", op="clear", error=str(exc))
            await reply.close(note=APOLOGY_RESET_FAILED)
            return TurnOutcome(status="failed", degraded=True)
        await reply.close(note=RESET_REPLY)
        log.info("turn.reset")
        return TurnOutcome(status="command")

    async def _load_history(self, message: IncomingMessage) -> tuple[list[Turn], bool, bool]:
        """(turns, degraded, seeded): stored history, else the adapter's seed for a conversation
        the bot joins midway (e.g. a Slack thread), else nothing."""
        try:
            turns = await self._history.load(message.conversation)
        except HistoryUnavailable as exc:
            log.warning("history.degraded", op="load", error=str(exc))
            return [], True, False
        if turns or message.seed is None:
            return turns, False, False
        try:
            if await self._history.exists(message.conversation):
                return [], False, False  # reset by a user: do not bring back what they dropped
            seeded = await message.seed()
        except Exception as exc:  # a failed thread read must not cost the answer
            log.warning("history.seed_failed", error=repr(exc))
            return [], False, False
        seed_turns = [
            Turn(role=m.role, content=m.content, author=m.name, at=self._wall_clock())
            for m in seeded if m.content.strip()
        ]
        seed_turns = seed_turns[-self.profile.history.max_messages :]
        return seed_turns, False, bool(seed_turns)

    async def _author_name(self, message: IncomingMessage) -> str:
        fallback = message.author.display_name
        if message.resolve_author is None or not message.multi_user:
            return fallback
        try:
            async with asyncio.timeout(AUTHOR_LOOKUP_TIMEOUT_S):
                return (await message.resolve_author()) or fallback
        except Exception as exc:  # a failed lookup costs the name, never the answer
            log.warning("turn.author_lookup_failed", error=repr(exc))
            return fallback

    def _build_messages(
        self, history: list[Turn], user: ChatMessage, profile: BotProfile
    ) -> tuple[tuple[ChatMessage, ...], bool]:
        """`[system, *history, user]`, dropping the oldest turns past the prompt budget."""
        system = ChatMessage("system", profile.system_prompt)
        budget = profile.history.max_prompt_tokens
        used = self._estimator.estimate([system, user], profile.model)
        kept: list[ChatMessage] = []
        for turn in reversed(history):
            msg = turn.as_message()
            cost = self._estimator.estimate([msg], profile.model)
            if used + cost > budget:
                break
            kept.append(msg)
            used += cost
        kept.reverse()
        return (system, *kept, user), len(kept) < len(history)

    async def _read_attachments(self, message: IncomingMessage) -> ReadAttachments:
        if not message.attachments:
            return ReadAttachments()
        return await read_attachments(message.attachments, self.profile.attachments)

    async def _answer(self, message: IncomingMessage, reply: ReplyStream) -> TurnOutcome:
        started = self._clock()
        (history, degraded, seeded), author_name, persona, files = await asyncio.gather(
            self._load_history(message), self._author_name(message),
            self._persona_of(message.persona_channel or message.conversation),
            self._read_attachments(message),
        )
        if not message.text.strip() and not files.text and not files.images:
            # Only files, and none could be read: the notes say why; the model has nothing to answer.
            reply.end(note=files.note or NOTHING_READ_NOTE)
            await reply.posts_landed()
            log.info("turn.nothing_to_read", files=len(message.attachments))
            return TurnOutcome(status="refused", degraded=degraded)
        profile = persona.apply(self.profile) if persona is not None else self.profile
        if persona is not None:
            structlog.contextvars.bind_contextvars(model=profile.model, persona=True)
        author = author_name if message.multi_user else None
        user = ChatMessage("user", _joined(message.text, files.text), name=author, images=tuple(files.images))
        messages, trimmed = self._build_messages(history, user, profile)
        request = ChatRequest(
            app_id=profile.app_id, model=profile.model,
            fallback_models=profile.fallback_models, messages=messages,
            max_tokens=profile.max_tokens,
        )
        try:
            result = await self._chat.stream(request, reply.push)
        except ReplyUndeliverable as exc:
            await reply.close()
            log.warning("turn.undeliverable", error=str(exc), latency_ms=self._ms_since(started))
            return TurnOutcome(status="failed", degraded=degraded, history_trimmed=trimmed)
        except ChatAPIError as exc:
            apology = apology_for(exc)
            await reply.close(note=INTERRUPTED_NOTE if reply.text else apology)
            log.warning("turn.failed", error=str(exc), error_type=type(exc).__name__,
                        latency_ms=self._ms_since(started), degraded=degraded)
            await self._usage.record_failure(profile.app_id, profile.model)
            return TurnOutcome(status="failed", apology=apology, degraded=degraded, history_trimmed=trimmed)
        except BaseException as exc:
            # Cancellation (shutdown) or a bug: still leave a final message, then let it propagate.
            await asyncio.shield(reply.close(note=INTERRUPTED_NOTE if reply.text else APOLOGY_INTERNAL))
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("turn.crashed")
            raise
        empty = not result.answer.strip()
        notes = [
            files.note,
            EMPTY_ANSWER_NOTE if empty and not result.truncated else None,
            INTERRUPTED_NOTE if result.interrupted else None,
            TRUNCATED_NOTE if result.truncated else None,
        ]
        footer = reply.sink.footer(ReplyInfo(
            model=result.model, fallback_used=result.fallback_used,
            history_trimmed=trimmed, truncated=result.truncated,
        ))
        note = "\n".join(n for n in [*notes, footer] if n) or None
        reply.end(note=note)
        # The model answered: its tokens were spent whether or not the platform shows the answer.
        await self._usage.record(self.profile.app_id, result.model, result.usage,
                                 fallback=result.fallback_used)
        await reply.posts_landed()
        if reply.undeliverable is not None:
            log.warning("turn.undeliverable", error=str(reply.undeliverable),
                        latency_ms=self._ms_since(started))
            return TurnOutcome(status="failed", result=result, degraded=degraded, history_trimmed=trimmed)

        turns = [
            *(history if seeded else []),
            Turn("user", _joined(message.text, files.history_text), author=user.name, at=self._wall_clock()),
        ]
        if not empty:  # an empty answer is no turn: the question stays, for the next try to follow
            turns.append(Turn("assistant", result.answer, model=result.model, at=self._wall_clock(),
                              reply=reply.journal_id))
        dropped, _ = await asyncio.gather(self._save(message.conversation, turns),
                                          self._remember_answer(message, reply, result))
        degraded = degraded or dropped is None
        trimmed = trimmed or bool(dropped)
        if result.usage is not None and result.attempts == 1:
            self._estimator.calibrate(result.model, messages, result.usage.prompt_tokens)
        tokens = result.usage.total_tokens if result.usage else "unknown"
        log.info(
            "turn.answered", model=result.model, fallback_used=result.fallback_used,
            latency_ms=self._ms_since(started), tokens=tokens, attempts=result.attempts,
            finish_reason=result.finish_reason, interrupted=result.interrupted,
            history_trimmed=trimmed, degraded=degraded,
        )
        return TurnOutcome(
            status="interrupted" if result.interrupted else "answered", result=result,
            history_trimmed=trimmed, degraded=degraded,
        )

    async def _save(self, conversation: ConversationKey, turns: list[Turn]) -> int | None:
        """Append the turn to history: how many old turns it pushed out, None when it could not."""
        try:
            return await self._history.append(conversation, turns)
        except HistoryUnavailable as exc:
            log.warning("history.degraded", op="save", error=str(exc))
            return None

    async def _remember_answer(
        self, message: IncomingMessage, reply: ReplyStream, result: ChatResult
    ) -> None:
        """Which messages hold this answer, for 👍 / 👎 (`core.feedback`), alongside saving it."""
        if self._feedback is not None and reply.refs:
            await self._feedback.remember_answer(self.profile.name, message.conversation.channel, reply.refs,
                                                 AnswerRecord(self.profile.app_id, result.model))

    def _ms_since(self, started: float) -> int:
        return int((self._clock() - started) * 1000)


def _joined(text: str, files: str) -> str:
    """A message's text with what its files added (inlined text, image references)."""
    return f"{text}\n\n{files}" if text.strip() and files else (files or text)
