"""From `bots/*.toml` to a running Discord bot: the `[discord]` table's validation, DISCORD_API_URL /
DISCORD_GATEWAY_URL, and sharding with an `AutoShardedClient`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import discord.gateway
import discord.http
import pytest
from aiohttp import web

from adapters.discord import DiscordBot
from adapters.discord.access import REFUSED_CHANNEL
from adapters.discord.platform import (
    DEFAULT_DISCORD_API_URL,
    DEFAULT_DISCORD_GATEWAY_URL,
    discord_config,
    point_discord_py,
)
from bots.definitions import BotDefinition, parse_definition
from bots.platforms import build_runtime
from bots.services import Services
from bots.settings import Settings
from core.errors import DefinitionError
from core.platform import TableContext
from core.redis_keys import RedisKeys
from tests.adapters.discord.conftest import ALICE, BOT_CHAT, GENERAL, WAIT_S, BotStarter, mention
from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import FakeDiscord

TOKEN = "wired-token"


def table_of(definition: BotDefinition) -> TableContext:
    """What the Discord platform's `configure` reads of a definition."""
    return TableContext(file=str(definition.file), bot=definition.name, table=definition.platform_settings)
DEFINITION = """
name = "helper"
platform = "discord"
app_id = "helper-app"
model = "test/model-a"
fallback_models = ["test/model-b"]
system_prompt = "You are wired."

[discord]
token = "${DISCORD_TOKEN}"
guild_ids = ["2000"]
allowed_channels = [3000]
footer_model = true
edit_interval_s = 1.5
"""
HEADER = DEFINITION.split("[discord]")[0] + "[discord]\ntoken = \"t\"\n"


@pytest.fixture
def discord_py_defaults() -> Iterator[None]:
    """discord.py's own REST base and gateway before the test, restored after it."""
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


def config_error(extra: str) -> DefinitionError:
    definition = parse_definition(Path("bot.toml"), HEADER + extra, {})
    with pytest.raises(DefinitionError) as raised:
        discord_config(table_of(definition))
    return raised.value


class TestDefinition:
    """The `[discord]` table becomes a `DiscordConfig`, or an error naming the field."""

    def test_every_field(self) -> None:
        """Ids as numbers or strings, lists, flags, shards and the edit interval all land."""
        definition = parse_definition(Path("bot.toml"), HEADER + """
guild_ids = ["2000", 2001]
allowed_users = [5000]
denied_users = ["6000"]
allowed_roles = [4000]
denied_roles = [4001]
allowed_channels = [2999]
denied_channels = [3000]
respond_to_all = [3001]
channel_memory = ["3000", 2999]
allow_dms = false
footer_model = true
footer_fallback = false
footer_trimmed = false
shard_count = 4
shard_ids = [2, 3]
edit_interval_s = 2
""", {})
        config = discord_config(table_of(definition))
        assert config.token == "t" and config.guild_ids == (2000, 2001)
        assert config.access.allowed_users == {5000} and config.access.denied_users == {6000}
        assert config.access.allowed_roles == {4000} and config.access.denied_roles == {4001}
        assert config.access.allowed_channels == {2999} and config.access.denied_channels == {3000}
        assert not config.access.allow_dms and config.respond_to_all == {3001}
        assert config.channel_memory == {3000, 2999}
        assert (config.footer.show_model, config.footer.show_fallback, config.footer.show_trimmed) == (
            True, False, False)
        assert config.shard_count == 4 and config.shard_ids == (2, 3) and not config.syncs_commands
        assert config.edit_interval_s == 2.0

    def test_defaults(self) -> None:
        """Only a token: DMs allowed, global commands, no sharding, 1.2 s between edits per channel."""
        config = discord_config(table_of(parse_definition(Path("bot.toml"), HEADER, {})))
        assert config.access.allow_dms and config.guild_ids == () and config.shard_count is None
        assert config.edit_interval_s == 1.2 and not config.footer.show_model and config.footer.show_fallback
        assert config.syncs_commands and config.channel_memory == frozenset()

    @pytest.mark.parametrize(("extra", "field"), [
        ("tokn = 'x'\n", "discord.tokn"),
        ("guild_ids = ['abc']\n", "discord.guild_ids[0]"),
        ("guild_ids = '2000'\n", "discord.guild_ids"),
        ("denied_roles = [0]\n", "discord.denied_roles[0]"),
        ("channel_memory = ['general']\n", "discord.channel_memory[0]"),
        ("channel_memory = 3000\n", "discord.channel_memory"),
        ("allow_dms = 'yes'\n", "discord.allow_dms"),
        ("shard_ids = [0]\n", "discord.shard_ids"),
        ("shard_count = 2\nshard_ids = [2]\n", "discord.shard_ids"),
        ("shard_count = 2\nshard_ids = [1, 1]\n", "discord.shard_ids"),
        ("shard_count = 0\n", "discord.shard_count"),
        ("edit_interval_s = 0\n", "discord.edit_interval_s"),
        ("edit_interval_s = true\n", "discord.edit_interval_s"),
    ])
    def test_errors_name_the_field(self, extra: str, field: str) -> None:
        """Each bad value is reported with its file and field."""
        error = config_error(extra)
        assert error.file == "bot.toml" and error.field == field

    def test_shipped_example_is_valid(self) -> None:
        """bots/discord-example.toml.example parses and validates, and its token stays out of repr."""
        example = Path(__file__).resolve().parents[3] / "bots" / "discord-example.toml.example"
        definition = parse_definition(example, example.read_text(encoding="utf-8"), {"DISCORD_TOKEN": "s3cret"})
        config = discord_config(table_of(definition))
        assert config.token == "s3cret" and "s3cret" not in repr(config)

    def test_empty_token(self) -> None:
        """A blank token is an error on discord.token."""
        definition = parse_definition(Path("bot.toml"), HEADER.replace('token = "t"', 'token = " "'), {})
        with pytest.raises(DefinitionError) as raised:
            discord_config(table_of(definition))
        assert raised.value.field == "discord.token"


class TestUrls:
    """DISCORD_API_URL / DISCORD_GATEWAY_URL."""

    def test_defaults_leave_discord_py_alone(self, discord_py_defaults: None) -> None:
        """Discord's own URLs change nothing in discord.py."""
        base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        point_discord_py(DEFAULT_DISCORD_API_URL, DEFAULT_DISCORD_GATEWAY_URL)
        assert discord.http.Route.BASE == base
        assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY is gateway

    async def test_toml_bot_connects_to_the_configured_discord_and_answers(
        self, discord_py_defaults: None, chat_api: FakeChatAPI, keys: RedisKeys
    ) -> None:
        """parse_definition + build_discord_bot, pointed at the fake by the two settings, logs in with
        the token, registers its commands, answers a mention and refuses outside allowed_channels."""
        chat_api.script("test/model-a", Behaviour(text="Wired and working."))
        definition = parse_definition(Path("helper.toml"), DEFINITION, {"DISCORD_TOKEN": TOKEN})
        async with FakeDiscord(expected_token=TOKEN) as fake:
            settings = Settings.from_env({
                "LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "REDIS_URL": redis_url(),
                "REDIS_KEY_PREFIX": keys.prefix, "DISCORD_API_URL": fake.api_base,
                "DISCORD_GATEWAY_URL": fake.gateway_url,
            })
            async with Services(settings) as services:
                bot = build_runtime(definition, services.engine(definition.profile), services,
                                        web.Application())
                assert isinstance(bot, DiscordBot) and bot.name == "helper"
                assert discord.http.Route.BASE == fake.api_base
                try:
                    await bot.start()
                    await asyncio.wait_for(bot.wait_until_ready(), WAIT_S)
                    assert bot.ready
                    assert fake.identifies[0]["token"] == TOKEN
                    assert {c["name"] for c in fake.guild_commands["2000"]} == {"reset", "help", "persona"}
                    sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> ping",
                                                          mentions=mention(fake))
                    await fake.wait_for(lambda: any(
                        m["content"].startswith("Wired and working.") for m in fake.bot_messages(GENERAL)
                    ), WAIT_S)
                    [answer] = fake.bot_messages(GENERAL)
                    assert answer["content"] == "Wired and working.\n\n-# model: `test/model-a`"
                    assert answer["message_reference"]["message_id"] == sent["id"]
                    assert chat_api.requests[-1].headers["X-App-ID"] == "helper-app"
                    await fake.send_message_create(channel_id=BOT_CHAT, content="<@1000> here?",
                                                   mentions=mention(fake))
                    await fake.wait_for(lambda: bool(fake.bot_messages(BOT_CHAT)), WAIT_S)
                    assert [m["content"] for m in fake.bot_messages(BOT_CHAT)] == [REFUSED_CHANNEL]
                finally:
                    await bot.stop()
                assert not bot.ready


class TestSharding:
    """shard_count / shard_ids: an AutoShardedClient running its share of the shards."""

    async def test_process_runs_only_its_shards(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """shard_count 2, shard_ids [0]: one IDENTIFY as shard [0, 2] (at the configured gateway),
        commands registered by this (shard 0's) process, and messages answered."""
        running = await start_bot(shard_count=2, shard_ids=(0,))
        assert isinstance(running.bot.client, discord.AutoShardedClient)
        assert [i["shard"] for i in fake.identifies] == [[0, 2]]
        assert {c["name"] for c in fake.global_commands} == {"reset", "help", "persona"}
        dm = fake.dm_channel_id(ALICE)  # DMs always arrive on shard 0
        sent = await fake.send_message_create(channel_id=dm, content="hello shard")
        assert await running.outcomes.of(sent["id"]) == "answered"

    async def test_other_shards_do_not_register_commands(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """The process running shard 1 of 2 identifies as [1, 2] and leaves commands to shard 0's."""
        await start_bot(shard_count=2, shard_ids=(1,))
        assert [i["shard"] for i in fake.identifies] == [[1, 2]]
        assert fake.global_commands == [] and fake.guild_commands == {}
