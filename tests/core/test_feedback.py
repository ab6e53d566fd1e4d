"""👍 / 👎 on answers: one vote per user per answer, removable, counted per app ID, model and day
beside the tokens (`lunos-bots usage`). Real Redis, the fake chat API."""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

from core.feedback import AnswerRecord, RedisFeedback, Vote
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from core.usage import RedisUsage
from tests.conftest import EngineFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import RecordingSink

A, B = "test/model-a", "test/model-b"


def question(text: str = "hi") -> IncomingMessage:
    return IncomingMessage(
        bot="testbot", platform="test", conversation=ConversationKey("test", "w1", "general"),
        author=Author("u1", "alice"), text=text, event_id=uuid.uuid4().hex, received_at=time.time(),
    )


async def counts(redis: Redis, keys: RedisKeys) -> dict[str, tuple[int, int]]:
    rows = await RedisUsage(redis, keys).read(app_id="test-app-1", days=1)
    return {r.model: (r.feedback_up, r.feedback_down) for r in rows}


class TestVotes:
    async def test_votes_count_under_the_model_that_answered(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        engine = make_engine()
        chat_api.script(A, Behaviour(kind="status", status=503), Behaviour(kind="status", status=503))
        sink = RecordingSink()
        await engine.handle(question(), sink)
        (answer,) = sink.messages  # the placeholder became the answer: one message
        assert await engine.vote("general", answer, "u2", Vote.UP, added=True) == "recorded"
        assert await engine.vote("general", answer, "u3", Vote.DOWN, added=True) == "recorded"
        assert await counts(redis, keys) == {B: (1, 1)}  # A failed over to B, which wrote the answer

    async def test_one_vote_per_user_and_removal(
        self, make_engine: EngineFactory, redis: Redis, keys: RedisKeys
    ) -> None:
        engine = make_engine()
        sink = RecordingSink()
        await engine.handle(question(), sink)
        (answer,) = sink.messages
        assert await engine.vote("general", answer, "u2", Vote.UP, added=True) == "recorded"
        assert await engine.vote("general", answer, "u2", Vote.UP, added=True) == "unchanged"  # a retry
        assert await counts(redis, keys) == {A: (1, 0)}
        # The other thumb replaces the vote; taking it off leaves none.
        assert await engine.vote("general", answer, "u2", Vote.DOWN, added=True) == "recorded"
        assert await counts(redis, keys) == {A: (0, 1)}
        assert await engine.vote("general", answer, "u2", Vote.UP, added=False) == "unchanged"
        assert await engine.vote("general", answer, "u2", Vote.DOWN, added=False) == "removed"
        assert await counts(redis, keys) == {A: (0, 0)}

    async def test_messages_that_are_not_answers_count_nothing(
        self, make_engine: EngineFactory, redis: Redis, keys: RedisKeys
    ) -> None:
        engine = make_engine()
        sink = RecordingSink()
        await engine.handle(question(), sink)
        (answer,) = sink.messages
        assert await engine.vote("general", "user-message-1", "u2", Vote.UP, added=True) == "not_an_answer"
        assert await engine.vote("random", answer, "u2", Vote.UP, added=True) == "not_an_answer"
        assert await counts(redis, keys) == {A: (0, 0)}

    async def test_the_vote_hook_hears_a_switch_as_a_removal_and_an_addition(
        self, redis: Redis, keys: RedisKeys
    ) -> None:
        heard: list[tuple[str, bool]] = []
        store = RedisFeedback(redis, keys, ttl_s=60,
                              on_vote=lambda _record, vote, added: heard.append((vote.value, added)))
        await store.remember_answer("bot", "c", ["m1"], AnswerRecord("test-app-1", A))
        await store.vote("bot", "c", "m1", "u", Vote.UP, added=True)
        await store.vote("bot", "c", "m1", "u", Vote.DOWN, added=True)
        await store.vote("bot", "c", "m1", "u", Vote.DOWN, added=False)
        assert heard == [("up", True), ("down", True), ("up", False), ("down", False)]

    async def test_an_answer_in_several_messages_takes_one_vote_per_user(
        self, redis: Redis, keys: RedisKeys
    ) -> None:
        """A long answer split into parts: 👍 on two parts is one vote, and 👎 on another replaces it."""
        store = RedisFeedback(redis, keys, ttl_s=60)
        await store.remember_answer("bot", "c", ["p1", "p2", "p3"], AnswerRecord("test-app-1", A))
        assert await store.vote("bot", "c", "p1", "u", Vote.UP, added=True) == "recorded"
        assert await store.vote("bot", "c", "p2", "u", Vote.UP, added=True) == "unchanged"
        assert await counts(redis, keys) == {A: (1, 0)}
        assert await store.vote("bot", "c", "p3", "u", Vote.DOWN, added=True) == "recorded"
        assert await counts(redis, keys) == {A: (0, 1)}
