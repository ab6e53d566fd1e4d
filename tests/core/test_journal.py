"""The reply journal on real Redis: leases, one claimant, finalising what a dead owner left, retries
across a platform outage, fencing out a late owner, and the engine handing a reply over."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from redis.asyncio import Redis

from core.errors import PlatformError, ReplyUndeliverable
from core.journal import INTERRUPTED_NOTE, JournalEntry, JournalSweeper, ReplyJournal
from core.ports import RenderLimits
from core.redis_keys import RedisKeys
from core.reply import ReplyStream
from core.types import Turn
from tests.conftest import EngineFactory
from tests.core.test_engine import A, incoming
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import RecordingSink

LEASE_S = 15.0
BOT = "testbot"
TARGET = {"channel": "C1"}


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class PlatformFinaliser:
    """A `Finaliser` over a `RecordingSink`'s messages, failing the next `outage` calls."""

    def __init__(self, sink: RecordingSink, outage: int = 0) -> None:
        self.sink = sink
        self.outage = outage
        self.calls: list[tuple[str, str | None, str]] = []
        self.done_calls = 0

    def _maybe_fail(self) -> None:
        if self.outage > 0:
            self.outage -= 1
            raise PlatformError("chat.update: internal_error")

    async def post(self, target: dict[str, str], text: str) -> str:
        self._maybe_fail()
        self.calls.append(("post", None, text))
        return await self.sink.post(text)

    async def edit(self, target: dict[str, str], ref: str, text: str) -> None:
        self._maybe_fail()
        self.calls.append(("edit", ref, text))
        if ref not in self.sink.messages:
            raise ReplyUndeliverable("message_not_found")
        self.sink.messages[ref] = text  # the platform's side: not the owner's sink logic

    async def done(self, target: dict[str, str]) -> None:
        self.done_calls += 1


def journal(redis: Redis, keys: RedisKeys, clock: Clock) -> ReplyJournal:
    return ReplyJournal(redis, keys, lease_s=LEASE_S, finalise_for_s=600.0, clock=clock)


async def dead_owners_reply(owner: ReplyJournal, sink: RecordingSink, *, final: list[str] | None = None
                            ) -> JournalEntry:
    """What a replica leaves behind when it is killed mid-reply: one message, showing a cursor."""
    ref = await sink.post("The answer so far ▌")
    entry = JournalEntry(id="r1", bot=BOT, target=dict(TARGET), refs=[ref], shown=["The answer so far ▌"],
                         indicator=" ▌", final=final)
    assert await owner.open(entry)
    assert await owner.record(entry)
    return entry


class TestSweeping:
    """Whoever sweeps after the lease ran out finishes the reply, once."""

    async def test_a_dead_owners_reply_ends_with_a_note(self, redis: Redis, keys: RedisKeys) -> None:
        """Nothing before the lease runs out; after it, the text shown so far ends with the note, the
        working signal is cleared and the entry is gone."""
        clock, sink = Clock(), RecordingSink()
        owner, other = journal(redis, keys, clock), journal(redis, keys, clock)
        await dead_owners_reply(owner, sink)
        finaliser = PlatformFinaliser(sink)
        sweeper = JournalSweeper(other, {BOT: finaliser})
        assert await sweeper.sweep() == 0, "the lease still holds"
        clock.now += LEASE_S
        assert await sweeper.sweep() == 1
        assert sink.final_texts == [f"The answer so far\n\n{INTERRUPTED_NOTE}"]
        assert finaliser.done_calls == 1
        clock.now += 10 * LEASE_S
        assert await sweeper.sweep() == 0, "finalised once, then forgotten"

    async def test_a_known_final_text_is_delivered(self, redis: Redis, keys: RedisKeys) -> None:
        """When the owner had decided the final text, that text is what the messages end with,
        including a message it never got to post."""
        clock, sink = Clock(), RecordingSink()
        owner = journal(redis, keys, clock)
        await dead_owners_reply(owner, sink, final=["The answer so far, complete. ", "And a second part."])
        clock.now += LEASE_S
        await JournalSweeper(journal(redis, keys, clock), {BOT: PlatformFinaliser(sink)}).sweep()
        assert sink.final_texts == ["The answer so far, complete. ", "And a second part."]

    async def test_one_claimant_wins(self, redis: Redis, keys: RedisKeys) -> None:
        """Three replicas sweeping at the same moment: the reply is finalised by exactly one."""
        clock, sink = Clock(), RecordingSink()
        await dead_owners_reply(journal(redis, keys, clock), sink)
        clock.now += LEASE_S
        finalisers = [PlatformFinaliser(sink) for _ in range(3)]
        claimed = await asyncio.gather(*(JournalSweeper(journal(redis, keys, clock), {BOT: f}).sweep()
                                         for f in finalisers))
        assert sorted(claimed) == [0, 0, 1]
        assert sum(len(f.calls) for f in finalisers) == 1

    async def test_only_bots_this_process_runs_are_claimed(self, redis: Redis, keys: RedisKeys) -> None:
        """A replica without the bot leaves its replies to one that has it."""
        clock, sink = Clock(), RecordingSink()
        await dead_owners_reply(journal(redis, keys, clock), sink)
        clock.now += LEASE_S
        assert await JournalSweeper(journal(redis, keys, clock), {"otherbot": PlatformFinaliser(sink)}).sweep() == 0
        assert await JournalSweeper(journal(redis, keys, clock), {BOT: PlatformFinaliser(sink)}).sweep() == 1


class TestOutages:
    """A platform that refuses the final state for a while, or for good."""

    async def test_retried_with_backoff_until_it_lands(self, redis: Redis, keys: RedisKeys) -> None:
        """Each failed attempt makes the reply due again later (backoff); then the text lands once."""
        clock, sink = Clock(), RecordingSink()
        await dead_owners_reply(journal(redis, keys, clock), sink)
        finaliser = PlatformFinaliser(sink, outage=3)
        sweeper = JournalSweeper(journal(redis, keys, clock), {BOT: finaliser})
        clock.now += LEASE_S
        claimed_at = []
        while len(claimed_at) < 4:
            if await sweeper.sweep():
                claimed_at.append(clock.now)
            clock.now += 0.25
        waits = [b - a for a, b in itertools.pairwise(claimed_at)]
        assert waits[0] < waits[1] < waits[2], f"the wait doubles: {waits}"
        assert sink.final_texts == [f"The answer so far\n\n{INTERRUPTED_NOTE}"]

    async def test_abandoned_after_its_window(self, redis: Redis, keys: RedisKeys) -> None:
        """Past `finalise_for_s` after the reply began the journal stops trying, and says so."""
        clock, sink = Clock(), RecordingSink()
        owner = ReplyJournal(redis, keys, lease_s=LEASE_S, finalise_for_s=LEASE_S + 1.0, clock=clock)
        await dead_owners_reply(owner, sink)
        outcomes: list[tuple[str, str]] = []
        sweeper = JournalSweeper(owner, {BOT: PlatformFinaliser(sink, outage=100)},
                                 on_outcome=lambda bot, outcome: outcomes.append((bot, outcome)))
        clock.now += LEASE_S
        await sweeper.sweep()
        assert outcomes == [(BOT, "abandoned")]
        clock.now += 1000
        assert await sweeper.sweep() == 0

    async def test_history_keeps_what_the_user_saw_when_abandoned(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """An answer saved as complete whose final text never reached the user (the platform
        refused it for the whole window) is corrected in history to what they saw, with the note."""
        chat_api.script(A, Behaviour(text="The full answer, in several words.", chunk_chars=5,
                                     token_delay_s=0.002))
        owner = ReplyJournal(redis, keys, lease_s=LEASE_S, finalise_for_s=1.0)  # the first failure ends it
        engine = make_engine(journal=owner)

        class FinalRefused(RecordingSink):
            async def edit(self, ref: str, text: str, *, final: bool) -> None:
                if final:
                    raise PlatformError("chat.update: internal_error")
                await super().edit(ref, text, final=final)

        sink = FinalRefused(target=dict(TARGET), limits=RenderLimits(
            max_chars=2000, split_chars=1900, min_edit_interval_s=0.0, streaming_indicator=" ▌"))
        message = incoming("question")
        assert (await engine.handle(message, sink)).status == "deferred"
        seen = sink.final_texts[0].removesuffix(" ▌")
        sweeper = JournalSweeper(owner, {"testbot": PlatformFinaliser(sink, outage=100)},
                                 on_abandoned=engine.correct_abandoned)
        assert await sweeper.sweep() == 1
        raw = await redis.lrange(keys.history("testbot", message.conversation), 0, -1)
        assert [Turn.from_json(r).content for r in raw] == [  # type: ignore[union-attr]
            "question", f"{seen}\n\n{INTERRUPTED_NOTE}"]

    async def test_a_deleted_message_is_not_posted_again(self, redis: Redis, keys: RedisKeys) -> None:
        """A message the platform says is gone (a moderator deleted it) ends the attempt for good."""
        clock, sink = Clock(), RecordingSink()
        await dead_owners_reply(journal(redis, keys, clock), sink)
        sink.messages.clear()
        finaliser = PlatformFinaliser(sink)
        clock.now += LEASE_S
        await JournalSweeper(journal(redis, keys, clock), {BOT: finaliser}).sweep()
        assert [c[0] for c in finaliser.calls] == ["edit"] and sink.messages == {}


class TestOwners:
    """The owner side: `ReplyStream` and the engine."""

    async def test_a_finished_reply_leaves_nothing(self, redis: Redis, keys: RedisKeys) -> None:
        """A reply that ends normally is forgotten: nothing is ever due."""
        clock = Clock()
        owner = journal(redis, keys, clock)
        sink = RecordingSink(target=dict(TARGET))
        reply = ReplyStream(sink, journal=owner, bot=BOT)
        await reply.open()
        await reply.push("all good")
        await reply.close()
        clock.now += 10 * LEASE_S
        assert await JournalSweeper(owner, {BOT: PlatformFinaliser(sink)}).sweep() == 0

    async def test_a_late_owner_is_fenced_out(self, redis: Redis, keys: RedisKeys) -> None:
        """Once another replica claimed the reply, the owner's journal writes are refused and it
        stops touching the platform."""
        clock = Clock()
        owner = journal(redis, keys, clock)
        sink = RecordingSink(target=dict(TARGET))
        reply = ReplyStream(sink, journal=owner, bot=BOT)
        await reply.open()
        await reply.push("slow owner")
        async with asyncio.timeout(5):
            await sink.first_text.wait()  # posted, so the journal has the reply (it is opened first)
        clock.now += LEASE_S
        finaliser = PlatformFinaliser(sink)
        assert await JournalSweeper(journal(redis, keys, clock), {BOT: finaliser}).sweep() == 1
        await reply.close()
        assert reply.taken_over
        edits_after_claim = [c for c in sink.calls if c.kind == "edit" and c.text == "slow owner"]
        assert edits_after_claim == [], "the owner did not overwrite the claimant's final state"

    async def test_engine_hands_an_undelivered_final_state_to_the_journal(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """The final edit fails for longer than the sink retries: the turn is "deferred", its answer
        is saved, and a sweeper delivers the final text at once, leaving one message."""
        chat_api.script(A, Behaviour(text="The full answer.", chunk_chars=4))
        owner = ReplyJournal(redis, keys, lease_s=LEASE_S)
        engine = make_engine(journal=owner)
        class FinalRefused(RecordingSink):
            async def edit(self, ref: str, text: str, *, final: bool) -> None:
                if final:
                    raise PlatformError("chat.update: internal_error (Slack answering 500)")
                await super().edit(ref, text, final=final)

        sink = FinalRefused(target=dict(TARGET))
        outcome = await engine.handle(incoming("question"), sink)
        assert outcome.status == "deferred"
        assert await engine.has_history(incoming("q").conversation)
        finaliser = PlatformFinaliser(sink)
        assert await JournalSweeper(owner, {"testbot": finaliser}).sweep() == 1
        assert sink.final_texts == ["The full answer."]
        assert [c.kind for c in sink.calls].count("post") == 1


@pytest.fixture(autouse=True)
async def _no_leftover_due(redis: Redis, keys: RedisKeys) -> None:
    """Each test starts with an empty journal under its own prefix."""
    assert await redis.zcard(keys.journal_due()) == 0
