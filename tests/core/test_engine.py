"""ConversationEngine on real Redis and the fake chat API: memory, isolation, order, dedupe,
trimming, TTL, commands, failures and a Redis outage."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Sequence
from typing import ClassVar

import pytest
from redis.asyncio import Redis

from core.chat_api import ChatClient
from core.engine import (
    APOLOGY_BAD_ENDPOINT,
    APOLOGY_BAD_KEY,
    APOLOGY_BAD_MODEL,
    APOLOGY_RATE_LIMITED,
    APOLOGY_UNAVAILABLE,
    INTERRUPTED_NOTE,
    RESET_REPLY,
    TRUNCATED_NOTE,
)
from core.errors import (
    AllModelsFailed,
    AuthenticationFailed,
    EndpointNotFound,
    FailedAttempt,
    ModelNotFound,
    RequestRejected,
)
from core.ports import RenderLimits
from core.profile import HistoryLimits
from core.redis_keys import RedisKeys
from core.types import Author, ChatMessage, Command, ConversationKey, IncomingMessage, parse_command
from core.usage import RedisUsage
from tests.conftest import EngineFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import DEFAULT_TEST_LIMITS, RecordingSink

A, B = "test/model-a", "test/model-b"


def conversation(name: str = "c1", thread: str | None = None) -> ConversationKey:
    return ConversationKey("test", "w1", name, thread)


def incoming(text: str, conv: ConversationKey | None = None, *, event_id: str | None = None,
             author: str = "alice", multi_user: bool = False, seed: Sequence[ChatMessage] | None = None
             ) -> IncomingMessage:
    async def load_seed() -> Sequence[ChatMessage]:
        return seed or ()

    return IncomingMessage(
        bot="testbot", platform="test", conversation=conv or conversation(), author=Author("u1", author),
        text=text, event_id=event_id or uuid.uuid4().hex,
        received_at=time.time(), multi_user=multi_user, seed=load_seed if seed is not None else None,
    )


def contents(body: dict[str, object] | None) -> list[str]:
    assert body is not None
    messages = body["messages"]
    assert isinstance(messages, list)
    return [str(m["content"]) for m in messages]


class TestMemory:
    """What the model is sent, turn after turn."""

    async def test_second_turn_sees_the_first(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """[system, *history, user]: the first question and answer come back on the second turn."""
        engine = make_engine()
        chat_api.script(A, Behaviour(text="Paris is the capital."), Behaviour(text="About 2 million."))
        await engine.handle(incoming("What is the capital of France?"), RecordingSink())
        await engine.handle(incoming("How many people live there?"), RecordingSink())
        assert contents(chat_api.requests[1].body) == [
            "You are a test bot.", "What is the capital of France?", "Paris is the capital.",
            "How many people live there?",
        ]
        roles = [m["role"] for m in chat_api.requests[1].body["messages"]]  # type: ignore[index]
        assert roles == ["system", "user", "assistant", "user"]

    async def test_conversations_are_isolated(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """A secret said in one conversation never appears in another's request."""
        engine = make_engine()
        await engine.handle(incoming("the password is swordfish", conversation("private")), RecordingSink())
        await engine.handle(incoming("what is the password?", conversation("other")), RecordingSink())
        await engine.handle(incoming("and in this thread?", conversation("private", "t1")), RecordingSink())
        for sent in chat_api.requests[1:]:
            assert not any("swordfish" in c for c in contents(sent.body))

    async def test_turns_in_one_conversation_run_in_order(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """Two messages at once: the second waits and sees the first's answer."""
        engine = make_engine()
        chat_api.script(A, Behaviour(text="first answer", ttft_s=0.3), Behaviour(text="second answer"))
        first = asyncio.create_task(engine.handle(incoming("one"), RecordingSink()))
        await chat_api.wait_for_requests(1)
        second = asyncio.create_task(engine.handle(incoming("two"), RecordingSink()))
        await asyncio.gather(first, second)
        assert contents(chat_api.requests[1].body)[1:] == ["one", "first answer", "two"]

    async def test_order_holds_across_replicas(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """Two engines with their own coordination (two replicas) still take turns via the Redis lock."""
        replica_a, replica_b = make_engine(), make_engine()
        chat_api.script(A, Behaviour(text="first answer", ttft_s=0.3), Behaviour(text="second answer"))
        first = asyncio.create_task(replica_a.handle(incoming("one"), RecordingSink()))
        await chat_api.wait_for_requests(1)
        second = asyncio.create_task(replica_b.handle(incoming("two"), RecordingSink()))
        await asyncio.gather(first, second)
        assert contents(chat_api.requests[1].body)[1:] == ["one", "first answer", "two"]

    async def test_author_names_in_multi_user_channels(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """In a channel several people share, each user turn says who spoke."""
        engine = make_engine()
        await engine.handle(incoming("hi", author="Alice Smith", multi_user=True), RecordingSink())
        await engine.handle(incoming("hello", author="Bob", multi_user=True), RecordingSink())
        assert contents(chat_api.requests[1].body)[1] == "[Alice Smith] hi"
        assert contents(chat_api.requests[1].body)[-1] == "[Bob] hello"

    async def test_seed_fills_an_empty_conversation(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """An adapter's seed (e.g. a Slack thread read once) becomes history, then is stored."""
        engine = make_engine()
        seed = [ChatMessage("user", "we deploy on Fridays", name="Carol"), ChatMessage("assistant", "noted")]
        await engine.handle(incoming("when do we deploy?", multi_user=True, seed=seed), RecordingSink())
        await engine.handle(incoming("thanks", multi_user=True, seed=seed), RecordingSink())
        assert contents(chat_api.requests[0].body)[1:3] == ["[Carol] we deploy on Fridays", "noted"]
        await engine.handle(incoming("bye", multi_user=True, seed=seed), RecordingSink())
        third = contents(chat_api.requests[2].body)
        assert third.count("[Carol] we deploy on Fridays") == 1, "a seed is used once, then history rules"
        assert len(third) == 1 + 2 + 2 + 2 + 1


class TestLimits:
    """Trimming and expiry."""

    async def test_max_messages_trims_oldest(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """Only the newest max_messages turns are kept, and the engine says it trimmed."""
        engine = make_engine(history=HistoryLimits(max_messages=4))
        outcomes = [await engine.handle(incoming(f"q{i}"), RecordingSink()) for i in range(4)]
        sent = contents(chat_api.requests[3].body)
        assert sent[0] == "You are a test bot." and sent[-1] == "q3"
        assert len(sent) == 1 + 4 + 1 and "q0" not in sent
        assert outcomes[2].history_trimmed and not outcomes[0].history_trimmed

    async def test_prompt_budget_drops_oldest_turns(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """Past max_prompt_tokens the oldest turns are left out of the request."""
        engine = make_engine(history=HistoryLimits(max_prompt_tokens=60))
        chat_api.script(A, Behaviour(text="y" * 200))
        await engine.handle(incoming("x" * 200), RecordingSink())
        outcome = await engine.handle(incoming("short"), RecordingSink())
        assert contents(chat_api.requests[1].body) == ["You are a test bot.", "short"]
        assert outcome.history_trimmed

    async def test_history_expires(self, make_engine: EngineFactory, redis: Redis, keys: RedisKeys) -> None:
        """The conversation key carries the bot's TTL."""
        engine = make_engine(history=HistoryLimits(ttl_s=3600))
        await engine.handle(incoming("remember me"), RecordingSink())
        ttl = await redis.ttl(keys.history("testbot", conversation()))
        assert 3500 < ttl <= 3600

    async def test_keys_share_a_cluster_slot(self, keys: RedisKeys) -> None:
        """History and lock of one conversation carry the same hash tag."""
        key = conversation("C9", "171.5")
        tag = "{bot|test:w1:C9:171.5}"
        assert tag in keys.history("bot", key) and tag in keys.lock("bot", key)


class TestDelivery:
    """Dedupe and what the user sees."""

    async def test_duplicate_event_is_answered_once(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """The same event id twice (a platform retry) makes one model call and one reply."""
        replica_a, replica_b = make_engine(), make_engine()  # separate coordination: only Redis is shared
        sink1, sink2 = RecordingSink(), RecordingSink()
        results = await asyncio.gather(replica_a.handle(incoming("hi", event_id="ev-1"), sink1),
                                       replica_b.handle(incoming("hi", event_id="ev-1"), sink2))
        assert sorted(r.status for r in results) == ["answered", "duplicate"]
        assert len(chat_api.requests) == 1
        assert len(sink1.messages) + len(sink2.messages) == 1

    async def test_reply_streams_and_ends_final(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """The placeholder is replaced by growing text; the last state is exactly the answer."""
        engine = make_engine()
        chat_api.script(A, Behaviour(text="one two three four five six", chunk_chars=3, token_delay_s=0.01))
        sink = RecordingSink()
        outcome = await engine.handle(incoming("count"), sink)
        assert outcome.status == "answered"
        assert sink.final_texts == ["one two three four five six"]
        edits = [c for c in sink.calls if c.kind == "edit"]
        assert len(edits) > 2 and edits[-1].final
        assert sink.calls[0].kind == "start" and sink.calls[-1].kind == "finish"

    async def test_all_models_failing_leaves_an_apology(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """No answer: the placeholder becomes one short apology; nothing is stored."""
        engine = make_engine()
        for model in (A, B):
            chat_api.script(model, Behaviour(kind="status", status=503))
        sink = RecordingSink()
        outcome = await engine.handle(incoming("hello?"), sink)
        assert outcome.status == "failed"
        assert sink.final_texts == [APOLOGY_UNAVAILABLE]
        assert DEFAULT_TEST_LIMITS.placeholder not in sink.final_texts
        assert not await engine.has_history(conversation())

    async def test_rate_limit_apology(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """Rate limits on every model read as 'try again in a minute'."""
        engine = make_engine()
        for model in (A, B):
            chat_api.script(model, Behaviour(kind="status", status=429, retry_after=0.01))
        sink = RecordingSink()
        await engine.handle(incoming("hello?"), sink)
        assert sink.final_texts == [APOLOGY_RATE_LIMITED]

    async def test_bad_key_apology(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """A rejected key is said plainly, without a traceback."""
        engine = make_engine()
        chat_api.script(A, Behaviour(kind="status", status=401))
        sink = RecordingSink()
        await engine.handle(incoming("hello?"), sink)
        assert sink.final_texts == [APOLOGY_BAD_KEY]

    async def test_each_misconfiguration_has_its_own_apology(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """Out of credits, a wrong base URL and an unknown model (on every model of the chain) each
        tell the admin what to fix, not a generic "try rephrasing"."""
        from core.chat_api import ChatClient
        from core.coordination import RedisCoordination
        from core.engine import (
            APOLOGY_BAD_ENDPOINT,
            APOLOGY_BAD_MODEL,
            APOLOGY_OUT_OF_CREDITS,
            ConversationEngine,
        )
        from core.history import RedisHistory
        from tests.conftest import FAST_RETRY, FAST_TIMEOUTS, TEST_API_KEY, make_profile

        engine = make_engine()
        chat_api.script(A, Behaviour(kind="status", status=402))
        sink = RecordingSink()
        await engine.handle(incoming("hello?"), sink)
        assert sink.final_texts == [APOLOGY_OUT_OF_CREDITS]

        for model in (A, B):
            chat_api.script(model, Behaviour(kind="status", status=404, error_message=f"model {model} not found"))
        sink = RecordingSink()
        await engine.handle(incoming("hello?"), sink)
        assert sink.final_texts == [APOLOGY_BAD_MODEL]

        profile = make_profile()
        async with ChatClient(base_url=chat_api.base_url.removesuffix("/v1"), api_key=TEST_API_KEY,
                              timeouts=FAST_TIMEOUTS, retry=FAST_RETRY) as wrong_url:
            misdirected = ConversationEngine(
                profile, chat=wrong_url, history=RedisHistory(redis, keys, profile.history, bot=profile.name),
                coordination=RedisCoordination(redis, keys), usage=RedisUsage(redis, keys),
            )
            sink = RecordingSink()
            await misdirected.handle(incoming("hello?"), sink)
        assert sink.final_texts == [APOLOGY_BAD_ENDPOINT]

    async def test_interrupted_answer_keeps_text_and_says_so(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """A stream nobody could continue keeps its text and ends with a visible note."""
        engine = make_engine(fallback_models=())
        chat_api.script(A, Behaviour(kind="die", text="Half of the answer", die_after_chars=8))
        sink = RecordingSink()
        outcome = await engine.handle(incoming("go"), sink)
        assert outcome.status == "interrupted"
        assert sink.final_texts[-1].endswith(INTERRUPTED_NOTE)
        assert outcome.result is not None and sink.final_texts[-1].startswith(outcome.result.text)

    async def test_truncated_answer_is_marked(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """finish_reason length shows a note after the text."""
        engine = make_engine()
        chat_api.script(A, Behaviour(text="a long answ", finish_reason="length"))
        sink = RecordingSink()
        await engine.handle(incoming("go"), sink)
        assert sink.final_texts == [f"a long answ\n\n{TRUNCATED_NOTE}"]

    async def test_footer_is_appended(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """The sink's footer lands after the answer, and it is told who answered."""
        engine = make_engine()
        chat_api.script(A, Behaviour(kind="status", status=500))
        chat_api.script(B, Behaviour(text="backup here"))
        sink = RecordingSink(footer_text="_answered by a fallback_")
        await engine.handle(incoming("go"), sink)
        assert sink.final_texts == ["backup here\n\n_answered by a fallback_"]
        assert sink.footers[0].fallback_used and sink.footers[0].model == B

    async def test_usage_is_recorded_per_app_and_model(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """Requests and tokens are counted under the bot's app ID and the answering model."""
        engine = make_engine(app_id="usage-app")
        await engine.handle(incoming("count me"), RecordingSink())
        chat_api.script(A, Behaviour(text="no usage", include_usage=False))
        await engine.handle(incoming("and me"), RecordingSink())
        rows = await RedisUsage(redis, keys).read(app_id="usage-app", days=1)
        assert len(rows) == 1
        row = rows[0]
        assert (row.app_id, row.model, row.requests, row.usage_unknown) == ("usage-app", A, 2, 1)
        assert row.prompt_tokens > 0 and row.completion_tokens > 0

    async def test_usage_goes_to_the_model_that_answered(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """After a fallback — ours (the first model failed) or the API's (it answered with another
        model) — requests and tokens are counted under the model that answered, not the one asked."""
        engine = make_engine(app_id="fallback-app")
        chat_api.script(A, Behaviour(kind="status", status=500))
        chat_api.script(B, Behaviour(text="the fallback answers"))
        await engine.handle(incoming("one"), RecordingSink())
        chat_api.script(A, Behaviour(text="the API switched models", reported_model=B))
        await engine.handle(incoming("two"), RecordingSink())
        rows = await RedisUsage(redis, keys).read(app_id="fallback-app", days=1)
        assert [(r.model, r.requests, r.fallbacks) for r in rows] == [(B, 2, 2)]
        assert rows[0].prompt_tokens > 0 and rows[0].completion_tokens > 0


class TestApologies:
    """Each failure tells the user something true: a 404 never blames the API key."""

    @pytest.mark.parametrize(("error", "apology"), [
        (AuthenticationFailed("HTTP 401", status=401), APOLOGY_BAD_KEY),
        (ModelNotFound("HTTP 404: model x not found", model="x", status=404), APOLOGY_BAD_MODEL),
        (EndpointNotFound("HTTP 404", status=404), APOLOGY_BAD_ENDPOINT),
        (AllModelsFailed([FailedAttempt("x", ModelNotFound("HTTP 404", model="x", status=404))]),
         APOLOGY_BAD_MODEL),
    ])
    def test_apology_names_what_to_fix(self, error: RequestRejected | AllModelsFailed, apology: str) -> None:
        """401 → the key; 404 naming the model → the model setting; 404 elsewhere → the base URL."""
        from core.engine import apology_for

        assert apology_for(error) == apology

    @pytest.mark.parametrize("status", [400, 404])
    async def test_unknown_model_of_a_single_model_bot(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, status: int
    ) -> None:
        """A bot with no fallbacks whose model the API does not know says to check the model, not the key."""
        engine = make_engine(fallback_models=())
        chat_api.script(A, Behaviour(kind="status", status=status, error_message=f"model {A} not found"))
        sink = RecordingSink()
        outcome = await engine.handle(incoming("hello?"), sink)
        assert sink.final_texts == [APOLOGY_BAD_MODEL] and outcome.apology == APOLOGY_BAD_MODEL


class TestCommands:
    """reset and help live in the engine."""

    def test_commands_are_parsed_once_in_core(self) -> None:
        """Any platform's spelling of a command becomes one `Command`; a message with no words asks
        for help; anything else is for the model; a native command given by the adapter wins."""
        assert [parse_command(t) for t in ("reset", " /RESET ", "!reset", "help", "/help", "!Help", "")] == [
            Command.RESET, Command.RESET, Command.RESET, Command.HELP, Command.HELP, Command.HELP, Command.HELP]
        assert parse_command("reset my password please") is None and parse_command("helpful?") is None
        assert incoming("  Reset ").command is Command.RESET and incoming("hi").command is None
        native = IncomingMessage(bot="b", platform="test", conversation=conversation(), author=Author("u", "u"),
                                 text="", event_id="e", received_at=0.0, command=Command.RESET)
        assert native.command is Command.RESET

    async def test_a_message_without_words_gets_help(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """A bare mention (no text after the bot's name) is answered with the help text, not the model."""
        engine = make_engine()
        sink = RecordingSink()
        outcome = await engine.handle(incoming("   "), sink)
        assert outcome.status == "command" and sink.final_texts == [engine.help_text()]
        assert not chat_api.requests

    async def test_a_reset_is_remembered_as_long_as_the_conversation(
        self, make_engine: EngineFactory, redis: Redis, keys: RedisKeys
    ) -> None:
        """Every saved turn renews the reset marker with the history, so a conversation a user reset
        is never re-seeded (from a Slack thread) while the bot remembers it at all."""
        engine = make_engine()
        await engine.handle(incoming("reset"), RecordingSink())
        marker = keys.reset_marker("testbot", conversation())
        await redis.expire(marker, 5)
        await engine.handle(incoming("a new topic"), RecordingSink())
        history_ttl = await redis.ttl(keys.history("testbot", conversation()))
        assert history_ttl > 5 and await redis.ttl(marker) >= history_ttl - 1  # same MULTI, a tick apart at most

    async def test_reset_forgets(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """After reset the next request carries no history."""
        engine = make_engine()
        await engine.handle(incoming("remember swordfish"), RecordingSink())
        sink = RecordingSink()
        await engine.handle(incoming("  RESET "), sink)
        assert sink.final_texts == [RESET_REPLY]
        await engine.handle(incoming("what did I say?"), RecordingSink())
        assert contents(chat_api.requests[-1].body) == ["You are a test bot.", "what did I say?"]
        assert len(chat_api.requests) == 2

    async def test_help(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """help answers without calling the model."""
        engine = make_engine()
        sink = RecordingSink()
        await engine.handle(incoming("/help"), sink)
        assert "reset" in sink.final_texts[0] and not chat_api.requests


class TestRedisDown:
    """An unreachable Redis costs memory, never the answer."""

    async def test_answers_without_history(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """Every Redis call fails fast; the turn is answered and reported degraded."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        dead = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2, socket_timeout=0.2)
        try:
            engine = make_engine(redis_client=dead)
            sink = RecordingSink()
            outcome = await engine.handle(incoming("still there?"), sink)
            again = await engine.handle(incoming("still there?", event_id="same"), RecordingSink())
            duplicate = await engine.handle(incoming("still there?", event_id="same"), RecordingSink())
        finally:
            await dead.aclose()
        assert outcome.status == "answered" and outcome.degraded
        assert sink.final_texts[0].startswith("You said: still there?")
        assert again.status == "answered" and duplicate.status == "duplicate"


class TestRedisCircuit:
    """A dead Redis costs one timeout, not one per call."""

    async def test_calls_skip_redis_after_a_failure(self) -> None:
        """After one failure the store fails at once until the cool-down passes, then probes again."""
        from core.errors import HistoryUnavailable
        from core.history import RedisHistory
        from core.redis_circuit import RedisCircuit

        now = [0.0]
        circuit = RedisCircuit(cool_down_s=5.0, clock=lambda: now[0])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        dead = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2)
        history = RedisHistory(dead, RedisKeys("lbtest-circuit"), HistoryLimits(), circuit, bot="b")
        try:
            errors = []
            for at in (0.0, 1.0, 6.0):
                now[0] = at
                try:
                    await history.load(conversation())
                except HistoryUnavailable as exc:
                    errors.append(str(exc))
        finally:
            await dead.aclose()
        assert "ConnectionError" in errors[0]
        assert errors[1].endswith("Redis failed recently")
        assert "ConnectionError" in errors[2], "after the cool-down Redis is tried again"


class TestBotsShareNothing:
    """Two bots in one channel: separate memories, locks and resets."""

    async def test_two_bots_in_one_channel(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """A secret told to one bot never reaches the other; resetting one leaves the other's memory."""
        pirate, lawyer = make_engine(name="pirate"), make_engine(name="lawyer")
        await pirate.handle(incoming("the launch code is swordfish"), RecordingSink())
        await lawyer.handle(incoming("what is the launch code?"), RecordingSink())
        assert not any("swordfish" in c for c in contents(chat_api.requests[1].body))
        await lawyer.handle(incoming("reset"), RecordingSink())
        assert await pirate.has_history(conversation())
        await pirate.handle(incoming("and again?"), RecordingSink())
        assert "the launch code is swordfish" in contents(chat_api.requests[-1].body)

    async def test_reset_is_not_undone_by_a_seed(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """After reset, an adapter's seed (a Slack thread's old messages) is not read back in."""
        engine = make_engine()
        seed = [ChatMessage("user", "old secret", name="Carol")]
        await engine.handle(incoming("hi", multi_user=True, seed=seed), RecordingSink())
        await engine.handle(incoming("reset"), RecordingSink())
        assert await engine.has_history(conversation()), "a reset conversation is still one the bot is in"
        await engine.handle(incoming("fresh start", multi_user=True, seed=seed), RecordingSink())
        assert contents(chat_api.requests[-1].body) == ["You are a test bot.", "[alice] fresh start"]


class TestPlatformSide:
    """What the engine does when the platform, not the model, is the problem."""

    async def test_undeliverable_reply_stops_the_stream(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """A sink that gives up for good (message deleted, no permission) stops the model stream;
        nothing is reposted and the turn is not saved."""
        from core.errors import ReplyUndeliverable

        class WithdrawnSink(RecordingSink):
            async def edit(self, ref: str, text: str, *, final: bool) -> None:
                raise ReplyUndeliverable("the message was deleted")

        engine = make_engine()
        chat_api.script(A, Behaviour(text="word " * 400, chunk_chars=5, token_delay_s=0.005))
        sink = WithdrawnSink()
        outcome = await engine.handle(incoming("tell me"), sink)
        assert outcome.status == "failed"
        assert [c.kind for c in sink.calls].count("post") == 1, "a withdrawn reply is never reposted"
        request = chat_api.requests[0]
        async with asyncio.timeout(5):
            await request.finished.wait()
        assert request.client_disconnected, "the model stream is abandoned, not read to the end"
        assert not await engine.has_history(conversation())

    async def test_tokens_of_an_undelivered_answer_are_counted(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """An answer the platform refuses at its last post (the channel is gone) is not remembered,
        but the tokens the model spent on it are in the usage counters."""
        from core.errors import ReplyUndeliverable

        class GoneAtTheEnd(RecordingSink):
            async def post(self, text: str) -> str:
                raise ReplyUndeliverable("channel_not_found")

        engine = make_engine()
        chat_api.script(A, Behaviour(text="An answer nobody will see."))
        sink = GoneAtTheEnd(limits=RenderLimits(max_chars=2000, split_chars=1900, min_edit_interval_s=0.0,
                                                grow_by_edits=False, first_chunk_after_s=60.0))
        outcome = await engine.handle(incoming("question"), sink)
        assert outcome.status == "failed"
        assert not await engine.has_history(conversation())
        [row] = await RedisUsage(redis, keys).read(days=1)
        assert (row.requests, row.model) == (1, A) and row.completion_tokens > 0

    async def test_working_signal_before_the_previous_turn_ends(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """A second message shows its working signal while the first answer is still streaming,
        and the conversation counts as one the bot is in from the first turn's start."""
        engine = make_engine()
        chat_api.script(A, Behaviour(text="slow first", ttft_s=0.5), Behaviour(text="second"))
        first_sink, second_sink = RecordingSink(), RecordingSink()
        first = asyncio.create_task(engine.handle(incoming("one"), first_sink))
        await chat_api.wait_for_requests(1)
        assert await engine.has_history(conversation()), "a turn in progress makes the bot part of it"
        second = asyncio.create_task(engine.handle(incoming("two"), second_sink))
        async with asyncio.timeout(5):
            await second_sink.started.wait()
        assert second_sink.calls[0].kind == "start" and not first.done()
        await asyncio.gather(first, second)


    async def test_lock_is_not_held_for_the_final_edit(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """The next turn's model request goes out while the previous turn's final edit is still
        waiting at the platform; the next reply's message is still posted after the previous one's,
        and the next turn sees the previous answer."""
        release_final = asyncio.Event()

        class SlowFinalSink(RecordingSink):
            async def edit(self, ref: str, text: str, *, final: bool) -> None:
                if final:
                    await release_final.wait()  # e.g. the workspace's edit budget is queued up
                await super().edit(ref, text, final=final)

        engine = make_engine()
        chat_api.script(A, Behaviour(text="first answer", chunk_chars=3), Behaviour(text="second answer"))
        first_sink, second_sink = SlowFinalSink(), RecordingSink()
        first = asyncio.create_task(engine.handle(incoming("one"), first_sink))
        await chat_api.wait_for_requests(1)
        second = asyncio.create_task(engine.handle(incoming("two"), second_sink))
        await chat_api.wait_for_requests(2)  # would time out if the lock waited for the final edit
        assert not first.done(), "the first reply's final edit has not landed yet"
        async with asyncio.timeout(5):
            await second_sink.finished.wait()
        release_final.set()
        await asyncio.gather(first, second)
        assert contents(chat_api.requests[1].body)[1:] == ["one", "first answer", "two"]
        first_post = next(c.at for c in first_sink.calls if c.kind == "post")
        second_post = next(c.at for c in second_sink.calls if c.kind == "post")
        assert first_post <= second_post
        assert first_sink.visible == "first answer"


    async def test_has_history_is_one_round_trip(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, keys: RedisKeys
    ) -> None:
        """Asking whether the bot is in a conversation (every Slack thread message asks) costs one
        Redis command, whether the answer comes from turns, a reset or a turn in progress."""
        from tests.conftest import redis_url

        class CountingRedis(Redis):
            commands: ClassVar[list[str]] = []

            async def execute_command(self, *args: object, **options: object) -> object:
                CountingRedis.commands.append(str(args[0]))
                return await super().execute_command(*args, **options)

        counting = CountingRedis.from_url(redis_url())
        try:
            engine = make_engine(redis_client=counting)
            for expected in (False, True):
                if expected:
                    await engine.handle(incoming("hello"), RecordingSink())
                CountingRedis.commands.clear()
                assert await engine.has_history(conversation()) is expected
                assert CountingRedis.commands == ["EXISTS"]
        finally:
            await counting.aclose()


class TestAuthorResolution:
    """An adapter that does not know a name yet lets the engine look it up after the signal."""

    async def test_resolved_name_is_used_and_failures_fall_back(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """The resolver runs after sink.start; if it fails, the adapter's stand-in name is used."""
        from dataclasses import replace

        engine = make_engine()
        sink = RecordingSink()
        order: list[str] = []

        async def resolve() -> str:
            order.append("resolve" if sink.started.is_set() else "resolve-before-signal")
            return "Ada Lovelace"

        async def broken() -> str:
            raise RuntimeError("users.info failed")

        message = incoming("hi", multi_user=True, author="U1")
        await engine.handle(replace(message, resolve_author=resolve), sink)
        await engine.handle(replace(incoming("again", multi_user=True, author="U2"), resolve_author=broken),
                            RecordingSink())
        assert order == ["resolve"]
        assert contents(chat_api.requests[0].body)[-1] == "[Ada Lovelace] hi"
        assert contents(chat_api.requests[1].body)[-1] == "[U2] again"


class TestRedisOutageLosesNothing:
    """Turns answered while Redis is down are saved once it answers again, in order."""

    async def test_outage_turns_are_replayed_in_order(self, chat_client: ChatClient, chat_api: FakeChatAPI) -> None:
        """Two turns during an outage are answered without history; once Redis is back (the
        circuit closed by a successful probe), the next turn finds all of them, oldest first."""
        import fakeredis

        from core.coordination import RedisCoordination
        from core.engine import ConversationEngine
        from core.history import RedisHistory
        from core.redis_circuit import RedisCircuit
        from core.write_behind import WriteBehind
        from tests.conftest import make_profile

        server = fakeredis.FakeServer()
        store = fakeredis.FakeAsyncRedis(server=server)
        circuit = RedisCircuit()
        buffer = WriteBehind(circuit)
        keys = RedisKeys("lbtest-outage")
        profile = make_profile()
        engine = ConversationEngine(
            profile, chat=chat_client,
            history=RedisHistory(store, keys, profile.history, circuit, bot=profile.name, write_behind=buffer),
            coordination=RedisCoordination(store, keys, circuit), usage=RedisUsage(store, keys, circuit=circuit),
        )
        chat_api.script(A, Behaviour(text="one"), Behaviour(text="two"), Behaviour(text="three"))
        try:
            await engine.handle(incoming("first"), RecordingSink())
            server.connected = False
            await engine.handle(incoming("second"), RecordingSink())
            assert len(buffer) == 1
            server.connected = True
            circuit.record_success()  # what a successful health-check ping does
            await engine.handle(incoming("third"), RecordingSink())
            assert len(buffer) == 0 and buffer.replayed == 1
            assert contents(chat_api.requests[2].body)[1:] == ["first", "one", "second", "two", "third"]
        finally:
            await store.aclose()

    async def test_the_buffer_is_bounded(self) -> None:
        """Past its bound the oldest deferred write is dropped, and counted."""
        from core.redis_circuit import RedisCircuit
        from core.write_behind import WriteBehind

        buffer = WriteBehind(RedisCircuit(), max_items=2)
        done: list[int] = []
        for i in range(3):
            async def write(i: int = i) -> None:
                done.append(i)
            buffer.defer("history", write)
        assert buffer.dropped == 1 and len(buffer) == 2
        assert await buffer.flush()
        assert done == [1, 2]
