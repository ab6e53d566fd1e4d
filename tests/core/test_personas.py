"""Per-channel personas: the shared command (validation, admin rule, wording) and the turn that
runs with a channel's model, fallbacks and prompt. Real Redis, the fake chat API."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis

from core import engine as engine_module
from core.personas import MAX_PROMPT_CHARS, Persona, PersonaStore
from core.profile import PersonaPolicy
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from tests.conftest import EngineFactory, make_profile
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import RecordingSink

A, B, C = "test/model-a", "test/model-b", "test/model-c"
POLICY = PersonaPolicy(allowed_models=(C,))


def in_channel(text: str, channel: str = "general", thread: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        bot="testbot", platform="test", conversation=ConversationKey("test", "w1", channel, thread),
        author=Author("u1", "alice"), text=text, event_id=uuid.uuid4().hex, received_at=time.time(),
    )


def channel(name: str = "general") -> ConversationKey:
    return ConversationKey("test", "w1", name)


class TestCommand:
    """`engine.persona_command`: what each platform's command calls."""

    async def test_only_admins_change_it_and_everyone_sees_it(self, make_engine: EngineFactory) -> None:
        engine = make_engine(personas=POLICY)
        refused = await engine.persona_command(channel(), "set model test/model-c", admin=False)
        assert refused.startswith("Only an admin")
        assert await engine.persona_command(channel(), "show", admin=False) == (
            f"This channel uses my own settings (model `{A}`).")
        done = await engine.persona_command(channel(), "set model test/model-c", admin=True)
        assert done == f"Done — in this channel I now answer with `{C}`."
        assert await engine.persona_command(channel(), "show", admin=False) == (
            f"In this channel I answer with model `{C}`.")

    async def test_models_outside_the_allowed_list_are_refused(self, make_engine: EngineFactory) -> None:
        engine = make_engine(personas=POLICY)
        answer = await engine.persona_command(channel(), "set model evil/expensive", admin=True)
        assert answer == (f"`evil/expensive` is not allowed for this bot. Allowed: `{A}`, `{B}`, `{C}`.")
        answer = await engine.persona_command(channel(), "set fallbacks test/model-b evil/x", admin=True)
        assert answer.startswith("`evil/x` is not allowed")
        assert await engine.persona_command(channel(), "show", admin=True) == (
            f"This channel uses my own settings (model `{A}`).")

    async def test_prompts_are_bounded_and_unset_clears(self, make_engine: EngineFactory) -> None:
        engine = make_engine(personas=POLICY)
        too_long = "x" * (MAX_PROMPT_CHARS + 1)
        assert "the limit is" in await engine.persona_command(channel(), f"set prompt {too_long}", admin=True)
        await engine.persona_command(channel(), "set prompt You are a pirate.  Answer in rhyme.", admin=True)
        await engine.persona_command(channel(), "set fallbacks none", admin=True)
        shown = await engine.persona_command(channel(), "show", admin=False)
        assert shown == "In this channel I answer with fallbacks none; system prompt “You are a pirate.  Answer in rhyme.”."
        assert await engine.persona_command(channel(), "unset prompt", admin=True) == (
            "Done — back to my own prompt here.")
        assert await engine.persona_command(channel(), "unset", admin=True) == (
            "Done — this channel uses my own settings again.")
        assert (await engine.persona_command(channel(), "show", admin=False)).startswith("This channel uses my own")
        assert "Unset what?" in await engine.persona_command(channel(), "unset colour", admin=True)

    async def test_help_lists_the_subcommands(self, make_engine: EngineFactory) -> None:
        engine = make_engine()
        text = await engine.persona_command(channel(), "help", admin=False)
        assert "`set model <model>`" in text and "`unset model|fallbacks|prompt|all`" in text


class TestTurns:
    """A turn in a channel with a persona."""

    async def test_the_channel_model_prompt_and_fallbacks_are_used_in_that_channel_only(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        engine = make_engine(personas=POLICY)
        await engine.persona_command(channel(), "set model test/model-c", admin=True)
        await engine.persona_command(channel(), "set prompt Talk like a pirate.", admin=True)
        await engine.handle(in_channel("hello", thread="t1"), RecordingSink())  # a thread of the channel
        await engine.handle(in_channel("hello", channel="random"), RecordingSink())
        first, second = chat_api.requests[0].body, chat_api.requests[1].body
        assert first is not None and second is not None
        assert first["model"] == C and first["messages"][0]["content"] == "Talk like a pirate."
        assert first["fallback_model"] == A  # the bot's chain, minus the channel's model
        assert second["model"] == A and second["messages"][0]["content"] == "You are a test bot."

    async def test_a_failing_channel_model_falls_back_along_the_channel_chain(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        engine = make_engine(personas=POLICY)
        await engine.persona_command(channel(), "set model test/model-c", admin=True)
        await engine.persona_command(channel(), "set fallbacks test/model-b", admin=True)
        chat_api.script(C, Behaviour(kind="status", status=503), Behaviour(kind="status", status=503))
        outcome = await engine.handle(in_channel("hello"), RecordingSink())
        assert outcome.status == "answered" and outcome.result is not None
        assert [r.body["model"] for r in chat_api.requests] == [C, C, B]  # type: ignore[index]

    async def test_help_shows_the_channel_persona(self, make_engine: EngineFactory) -> None:
        engine = make_engine(personas=POLICY)
        await engine.persona_command(channel(), "set model test/model-c", admin=True)
        sink = RecordingSink()
        await engine.handle(in_channel("help"), sink)
        shown = "\n".join(sink.messages.values())
        assert f"model `{C}`" in shown and f"This channel's persona: model `{C}`." in shown


class TestStore:
    async def test_redis_down_means_the_bots_own_settings(self, redis: Redis, keys: RedisKeys) -> None:
        circuit = RedisCircuit()
        circuit.record_failure()
        store = PersonaStore(redis, keys, circuit=circuit)
        assert await store.get("testbot", channel()) is None

    def test_a_channel_model_keeps_the_rest_of_the_bots_chain(self) -> None:
        profile = make_profile(fallback_models=(B,))
        applied = Persona(model=B).apply(profile)
        assert (applied.model, applied.fallback_models) == (B, (A,))
        assert Persona(fallback_models=()).apply(profile).fallback_models == ()


class TestStaleAndSlow:
    async def test_a_model_the_bot_no_longer_allows_is_not_used(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """Set while allowed, then the definition dropped it: the channel falls back to the bot's model."""
        await make_engine(personas=POLICY).persona_command(channel(), "set model test/model-c", admin=True)
        engine = make_engine()  # the same bot, redeployed without `allowed_models`
        await engine.handle(in_channel("hello"), RecordingSink())
        assert chat_api.requests[0].body["model"] == A  # type: ignore[index]

    async def test_a_slow_store_is_not_waited_for(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A persona Redis cannot produce within PERSONA_LOOKUP_TIMEOUT_S: the bot's own settings."""
        stuck = asyncio.Event()

        async def never(self: PersonaStore, bot: str, key: ConversationKey) -> Persona | None:
            await stuck.wait()
            return None

        monkeypatch.setattr(engine_module, "PERSONA_LOOKUP_TIMEOUT_S", 0.05)
        monkeypatch.setattr(PersonaStore, "get", never)
        engine = make_engine(personas=POLICY)
        outcome = await engine.handle(in_channel("hello"), RecordingSink())
        assert outcome.status == "answered" and chat_api.requests[0].body["model"] == A  # type: ignore[index]
        assert await engine.help_for(channel()) == engine.help_text()  # help answers too, without it
