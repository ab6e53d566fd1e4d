"""A Slack bot defined in TOML, built by `bots.slack_wiring` through `bots.platforms`, on the runner's
real HTTP server (HTTP mode) or the fake's socket (Socket Mode); and the `[slack]` table's checks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from adapters.slack import SlackBot, SlackBotConfig
from adapters.slack.bot import PERSONA_COMMAND
from adapters.slack.platform import slack_config
from bots.definitions import BotDefinition, parse_definition
from bots.metrics import Metrics
from bots.platforms import build_runtime
from bots.runner import HealthServer
from bots.services import Services
from bots.settings import DEFAULT_BOTS_DIR, Settings
from core.errors import DefinitionError, PlatformError
from core.platform import TableContext
from core.rate_budget import RateBudget
from core.redis_keys import RedisKeys
from tests.adapters.slack.conftest import MODEL_A
from tests.conftest import TEST_API_KEY, EngineFactory, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers

SECRET = "helpdesk-signing-secret"


def table_of(definition: BotDefinition, api_url: str) -> TableContext:
    """What the Slack platform's `configure` reads of a definition, with SLACK_API_URL set."""
    return TableContext(file=str(definition.file), bot=definition.name, table=definition.platform_settings,
                        settings={"SLACK_API_URL": api_url})
DEFINITION = """
name = "helpdesk"
platform = "slack"
app_id = "lunos-helpdesk"
model = "test/model-a"
fallback_models = ["test/model-b"]
system_prompt = "You run the help desk."

[slack]
bot_token = "${SLACK_BOT_TOKEN}"
signing_secret = "${SLACK_SIGNING_SECRET}"
"""


def settings_for(chat_api: FakeChatAPI, fake: FakeSlackAPI, keys: RedisKeys) -> Settings:
    return Settings.from_env({
        "LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "REDIS_URL": redis_url(),
        "REDIS_KEY_PREFIX": keys.prefix, "SLACK_API_URL": fake.base_url, "HOST": "127.0.0.1", "PORT": "0",
    })


def definition_text(**slack: Any) -> str:
    lines = [f"{key} = {json.dumps(value)}" for key, value in slack.items()]
    return DEFINITION.split("[slack]")[0] + "[slack]\n" + "\n".join(lines) + "\n"


class TestFromDefinitionToAnswer:
    """bots/*.toml → build_runtime → a running Slack bot."""

    async def test_http_mode_end_to_end(self, chat_api: FakeChatAPI, keys: RedisKeys) -> None:
        """A signed app_mention posted to /slack/helpdesk/events on the shared server is answered in
        its thread, with the bot's X-App-ID, and /healthz reports the bot ready."""
        chat_api.script(MODEL_A, Behaviour(text="Have you tried turning it off and on again?"))
        async with FakeSlackAPI() as fake:
            env = {"SLACK_BOT_TOKEN": fake.bot_token, "SLACK_SIGNING_SECRET": SECRET}
            definition = parse_definition(Path("bots/helpdesk.toml"), DEFINITION, env)
            async with Services(settings_for(chat_api, fake, keys)) as services:
                server = HealthServer(services, Metrics())
                runtime = build_runtime(definition, services.engine(definition.profile), services, server.app)
                assert isinstance(runtime, SlackBot)
                server.watch([runtime])
                port = await server.start("127.0.0.1", 0)
                await runtime.start()
                try:
                    payload = app_mention_event(text="<@UBOT> my laptop is broken", ts="1700000100.000100",
                                                event_id="EvHelp1")
                    fake.seed_from_event(payload)
                    body = json.dumps(payload).encode()
                    async with aiohttp.ClientSession() as http:
                        url = f"http://127.0.0.1:{port}/slack/helpdesk/events"
                        async with http.post(url, data=body, headers=signed_headers(body, SECRET)) as sent:
                            assert sent.status == 200
                        await runtime.wait_idle()
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
                            assert (await health.json())["bots"] == {"helpdesk": True}
                finally:
                    await runtime.stop()
                    await server.stop()
            replies = [m.text for m in fake.bot_replies("C1", "1700000100.000100")]
            assert replies == ["Have you tried turning it off and on again?"]
            assert chat_api.requests[0].headers["X-App-ID"] == "lunos-helpdesk"
            assert fake.calls_to("chat.postMessage")[0].token == fake.bot_token

    async def test_socket_mode_when_app_token_is_set(self, chat_api: FakeChatAPI, keys: RedisKeys) -> None:
        """With app_token the bot connects over Socket Mode and registers no HTTP route."""
        async with FakeSlackAPI() as fake:
            text = definition_text(bot_token=fake.bot_token, app_token=fake.app_token)
            definition = parse_definition(Path("bots/helpdesk.toml"), text, {})
            async with Services(settings_for(chat_api, fake, keys)) as services:
                server = HealthServer(services, Metrics())
                runtime = build_runtime(definition, services.engine(definition.profile), services, server.app)
                assert not any(r.resource and r.resource.canonical == "/slack/helpdesk/events"
                               for r in server.app.router.routes())
                await runtime.start()
                try:
                    assert fake.socket_connections == 1 and runtime.ready
                    payload = app_mention_event(text="<@UBOT> hi", ts="1700000100.000100", event_id="EvS1")
                    await fake.wait_for_ack(await fake.send_socket_event(payload))
                    assert isinstance(runtime, SlackBot)
                    await runtime.wait_idle()
                finally:
                    await runtime.stop()
            assert len(fake.bot_replies("C1", "1700000100.000100")) == 1


class TestStartFailures:
    """A bot Slack refuses fails to start with a sentence naming it, and leaks nothing."""

    async def test_refused_token(self, make_engine: EngineFactory, redis: Redis, keys: RedisKeys) -> None:
        """auth.test refusing the token raises PlatformError naming the bot and what to check."""
        async with FakeSlackAPI() as fake:
            config = SlackBotConfig(bot_token="xoxb-wrong", signing_secret=SECRET, api_url=fake.base_url)
            bot = SlackBot(make_engine(), config, budget=RateBudget(redis, keys))
            with pytest.raises(PlatformError, match=r"'testbot'.*invalid_auth.*bot_token"):
                await bot.start()
            assert not bot.ready
            await bot.stop()


class TestSlackTable:
    """`[slack]` validation names the field and what was expected."""

    @pytest.mark.parametrize(("slack", "field", "expected"), [
        ({"bot_token": "xapp-1"}, "slack.bot_token", "starting xoxb-"),
        ({"signing_secret": "s"}, "slack.bot_token", "is required"),
        ({"bot_token": "xoxb-1"}, "slack.signing_secret", "required in HTTP mode"),
        ({"bot_token": "xoxb-1", "app_token": "xoxb-2"}, "slack.app_token", "starting xapp-"),
        ({"bot_token": "xoxb-1", "app_token": "xapp-1", "streaming": "fast"}, "slack.streaming", "'native'"),
        ({"bot_token": "xoxb-1", "app_token": "xapp-1", "require_mention": "yes"}, "slack.require_mention",
         "true or false"),
        ({"bot_token": "xoxb-1", "app_token": "xapp-1", "edits_per_minute": 0}, "slack.edits_per_minute",
         "at least 2"),
        ({"bot_token": "xoxb-1", "app_token": "xapp-1", "colour": "blue"}, "slack.colour", "unknown field"),
    ])
    def test_invalid_fields(self, slack: dict[str, Any], field: str, expected: str) -> None:
        """Each mistake is a DefinitionError on its own field."""
        definition = parse_definition(Path("bots/bad.toml"), definition_text(**slack), {})
        with pytest.raises(DefinitionError) as raised:
            slack_config(table_of(definition, "http://slack.test/api/"))
        assert raised.value.file == "bots/bad.toml" and raised.value.field == field
        assert expected in raised.value.problem

    def test_values_land_in_the_config(self) -> None:
        """Every setting reaches SlackBotConfig; SLACK_API_URL is the Web API base."""
        text = definition_text(bot_token="xoxb-1", app_token="xapp-1", require_mention=True, streaming="native",
                               edits_per_minute=20)
        config = slack_config(table_of(parse_definition(Path("b.toml"), text, {}), "http://127.0.0.1:9/api/"))
        assert (config.socket_mode, config.require_mention, config.streaming) == (True, True, "native")
        assert (config.pacing.per_window, config.api_url) == (20, "http://127.0.0.1:9/api/")

    def test_api_url_gets_its_trailing_slash(self) -> None:
        """SLACK_API_URL without the final "/" still names the API base (slack-sdk appends method names)."""
        settings = Settings.from_env({"SLACK_API_URL": "http://127.0.0.1:9/api"})
        assert settings.platform_settings["SLACK_API_URL"] == "http://127.0.0.1:9/api/"
        assert Settings.from_env({}).platform_settings["SLACK_API_URL"] == "https://slack.com/api/"

    def test_repr_hides_the_secrets(self) -> None:
        """A config printed in a log line or a traceback shows no token or signing secret."""
        config = SlackBotConfig(bot_token="xoxb-secret-1", signing_secret="sign-secret-2", app_token="xapp-secret-3")
        shown = repr(config)
        assert "secret" not in shown and "xox" not in shown and "xapp" not in shown
        assert "require_mention=False" in shown

    def test_the_shipped_example_is_valid(self) -> None:
        """bots/slack-example.toml.example, with its variables set, passes these checks (HTTP mode)."""
        example = (DEFAULT_BOTS_DIR / "slack-example.toml.example").read_text(encoding="utf-8")
        env = {"SLACK_BOT_TOKEN": "xoxb-123", "SLACK_SIGNING_SECRET": "abc123"}
        config = slack_config(table_of(parse_definition(Path("support.toml"), example, env), "https://slack.com/api/"))
        assert not config.socket_mode and config.signing_secret == "abc123"


class TestManifest:
    """deploy/slack-manifest.yaml asks for what the adapter uses."""

    def test_scopes_and_events(self) -> None:
        """Every event the bot listens to is subscribed, and every method's scope is requested."""
        manifest = (DEFAULT_BOTS_DIR.parent / "deploy" / "slack-manifest.yaml").read_text(encoding="utf-8")
        items = set(re.findall(r"^\s*-\s+([a-z_.:]+)", manifest, flags=re.MULTILINE))
        assert {"app_mention", "message.channels", "message.groups", "message.im", "message.mpim",
                "reaction_added", "reaction_removed"} <= items
        assert {"app_mentions:read", "chat:write", "channels:history", "groups:history", "im:history",
                "reactions:write", "users:read", "assistant:write", "reactions:read", "files:read",
                "commands"} <= items
        assert "/slack/" in manifest and "socket_mode_enabled" in manifest
        # The slash command the bot listens to is declared, at the events URL, with a usage hint.
        command = re.search(r"^( *)- command:[ \t]*(\S+)[ \t]*\n((?:\1  [ \t]*\w+:.*\n)+)", manifest, flags=re.MULTILINE)
        assert command is not None and command.group(2) == PERSONA_COMMAND
        fields = dict(re.findall(r"^\s+(\w+):\s*(.*?)\s*(?:#.*)?$", command.group(3), flags=re.MULTILINE))
        assert fields["url"].endswith("/events") and fields["description"] and fields["usage_hint"]
