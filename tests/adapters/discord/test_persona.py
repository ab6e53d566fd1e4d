"""`/persona`: a channel's own model, fallbacks or system prompt, set by a member with Manage Server
(or one listed in the bot definition's `[personas] admins`), shown by `/persona show` and `/help`,
cleared by `/persona unset`; answers in that channel use it.

Unmodified discord.py against FakeDiscord (real INTERACTION_CREATE events with subcommand options),
real Redis, the fake chat API."""

from __future__ import annotations

from typing import Any

from adapters.discord.bot import PERSONA_SET_NEEDS_AN_OPTION
from core.profile import PersonaPolicy
from tests.adapters.discord.conftest import (
    ALICE,
    BOT_CHAT,
    GENERAL,
    GUILD,
    THREAD,
    WAIT_S,
    BotStarter,
    RunningBot,
    mention,
)
from tests.adapters.discord.test_commands import EPHEMERAL, private_answer
from tests.conftest import EngineFactory
from tests.fakes.chat_api import FakeChatAPI
from tests.fakes.discord_api import FakeDiscord

A, B = "test/model-a", "test/model-b"  # the test profile's model and fallback
OWNER = "6000"  # the guild's owner: every permission, Manage Server included
MANAGE_GUILD = 1 << 5


def subcommand(name: str, **options: str) -> list[dict[str, Any]]:
    """The interaction `options` of `/persona <name> option:value…` as Discord sends them."""
    return [{"name": name, "type": 1, "options": [
        {"name": key, "type": 3, "value": value} for key, value in options.items()]}]


async def persona(
    fake: FakeDiscord, name: str, *, channel: str = GENERAL, user: dict[str, Any] | None = None,
    **options: str,
) -> str:
    """Run `/persona <name> …` and return its private answer."""
    interaction = await fake.send_interaction(name="persona", channel_id=channel, user=user,
                                              options=subcommand(name, **options))
    return str((await private_answer(fake, interaction))["content"])


async def ask(fake: FakeDiscord, running: RunningBot, chat_api: FakeChatAPI, channel: str = GENERAL) -> str | None:
    """Mention the bot in `channel`; the model the chat API was asked for."""
    sent = await fake.send_message_create(channel_id=channel, content="<@1000> hi", mentions=mention(fake))
    assert await running.outcomes.of(sent["id"]) == "answered"
    return chat_api.requests[-1].model


class TestRegistration:
    async def test_persona_is_a_guild_only_group_for_server_managers(
        self, fake: FakeDiscord, start_bot: BotStarter
    ) -> None:
        """Registered with Manage Server as its default permission, not in DMs, with show/set/unset."""
        await start_bot(guild_ids=(int(GUILD),))
        [command] = [c for c in fake.guild_commands[GUILD] if c["name"] == "persona"]
        assert command["default_member_permissions"] == str(MANAGE_GUILD)
        assert command["dm_permission"] is False  # discord.py's `guild_only`
        options = {o["name"]: o for o in command["options"]}
        assert set(options) == {"show", "set", "unset"}
        assert {o["name"] for o in options["set"]["options"]} == {"model", "fallbacks", "prompt"}
        assert not any(o.get("required") for o in options["set"]["options"])
        [field] = options["unset"]["options"]
        assert field["required"] and {c["value"] for c in field["choices"]} == {"model", "fallbacks", "prompt", "all"}


class TestChanges:
    """Who may change a channel's persona, and what it changes."""

    async def test_a_member_without_manage_server_is_refused(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Alice (no Manage Server, not listed) cannot set a model; the channel keeps the bot's."""
        running = await start_bot()
        answer = await persona(fake, "set", model=B)
        assert answer.startswith("Only an admin can change this channel's persona")
        assert await ask(fake, running, chat_api) == A

    async def test_a_server_manager_sets_a_model_the_channel_then_uses(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """The owner sets model B here: mentions here use B, other channels still A; `unset` clears it."""
        running = await start_bot()
        owner = fake.human(OWNER, "owner")
        assert await persona(fake, "set", user=owner, model=B) == f"Done — in this channel I now answer with `{B}`."
        assert await ask(fake, running, chat_api) == B
        assert await ask(fake, running, chat_api, channel=BOT_CHAT) == A
        assert "model `test/model-b`" in await persona(fake, "show")  # show is open to everyone

        assert await persona(fake, "unset", user=owner, field="all") == "Done — this channel uses my own settings again."
        assert await ask(fake, running, chat_api) == A

    async def test_a_model_not_allowed_is_refused(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Only the bot's own models (and `[personas] allowed_models`) may be chosen."""
        running = await start_bot()
        answer = await persona(fake, "set", user=fake.human(OWNER, "owner"), model="evil/model")
        assert answer.startswith("`evil/model` is not allowed for this bot.")
        assert await ask(fake, running, chat_api) == A

    async def test_a_listed_admin_needs_no_server_permission(
        self, fake: FakeDiscord, start_bot: BotStarter, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """Alice listed in `[personas] admins` sets a prompt and fallbacks (several options at once:
        one answer line each); the next request carries the prompt."""
        engine = make_engine(platform="discord", personas=PersonaPolicy(admins=(ALICE,)))
        running = await start_bot(engine=engine)
        answer = await persona(fake, "set", fallbacks="none", prompt="You are a pirate.")
        assert answer.splitlines() == ["Done — fallbacks in this channel: none.",
                                       "Done — this channel has its own system prompt now."]
        await ask(fake, running, chat_api)
        body = chat_api.requests[-1].body
        assert body is not None and body["messages"][0] == {"role": "system", "content": "You are a pirate."}
        assert "fallback_model" not in body

    async def test_set_without_options_says_what_to_give(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        await start_bot()
        assert await persona(fake, "set", user=fake.human(OWNER, "owner")) == PERSONA_SET_NEEDS_AN_OPTION

    async def test_a_thread_follows_its_channels_persona(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """A Discord thread is a channel of its own, but personas are per channel as on Slack: a
        thread answers with its parent's, and /persona typed in a thread sets the parent's."""
        running = await start_bot()
        await persona(fake, "set", channel=THREAD, user=fake.human(OWNER, "owner"), model=B)
        assert await ask(fake, running, chat_api, channel=THREAD) == B
        assert await ask(fake, running, chat_api) == B  # the parent channel, GENERAL
        assert await ask(fake, running, chat_api, channel=BOT_CHAT) == A


class TestHelp:
    async def test_help_shows_the_channel_persona(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """/help in a channel with a persona says what it changes; elsewhere it does not."""
        running = await start_bot()
        await persona(fake, "set", user=fake.human(OWNER, "owner"), model=B)
        interaction = await fake.send_interaction(name="help", channel_id=GENERAL)
        await fake.wait_for(lambda: interaction["id"] in fake.interaction_callbacks, WAIT_S)
        callback = fake.interaction_callbacks[interaction["id"]]
        assert "This channel's persona: model `test/model-b`" in callback["data"]["content"]
        assert callback["data"]["flags"] & EPHEMERAL
        assert callback["data"]["allowed_mentions"] == {"parse": [], "replied_user": True}
        elsewhere = await fake.send_interaction(name="help", channel_id=BOT_CHAT)
        await fake.wait_for(lambda: elsewhere["id"] in fake.interaction_callbacks, WAIT_S)
        assert fake.interaction_callbacks[elsewhere["id"]]["data"]["content"] == running.engine.help_text()
