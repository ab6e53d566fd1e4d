"""A platform added without touching `bots/`: the toy platform (`tests/toy_platform`), registered at
run time, is loaded from a definition, configured by `Settings`, proved by `check` and run by
`lunos-bots run`'s runner; and docs/architecture.md's "How to add a platform" names only what exists."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import io
import os
import re
import signal
import types
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bots import cli, runner
from bots.definitions import load_definitions, parse_definition
from bots.platforms import validate_platform_table
from bots.registry import PLATFORMS
from bots.services import Services
from bots.settings import Settings
from core.errors import DefinitionError, InvalidDefinition
from core.limits import TurnLimits
from core.redis_keys import RedisKeys
from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.toy_platform import GOOD_TOKEN, TOY, ToyBot, ToyConfig

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
WAIT_S = 20.0  # a generous bound for the runner to start a bot; never a speed assertion
TOY_BOT = """
name = "toybot"
platform = "toy"
app_id = "lunos-toy"
model = "test/model-a"
[toy]
token = "${TOY_TOKEN}"
greeting = "hi"
"""


@pytest.fixture
def toy() -> Iterator[None]:
    """The toy platform, registered for one test (as its one line in bots/registry.py would)."""
    PLATFORMS.register(TOY)
    try:
        yield
    finally:
        PLATFORMS.unregister(TOY.name)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestToyPlatform:
    """Everything `bots/` does with a platform, it does with one it has never heard of."""

    def test_the_loader_reads_its_table_and_credentials(self, toy: None) -> None:
        """An unset ${VAR} in a credential field means "no credentials"; set, the token is a secret;
        the bot has limits (it is not a terminal); another platform's table is refused."""
        lacking = parse_definition(Path("toy.toml"), TOY_BOT, {})
        assert lacking.platform == "toy" and lacking.missing_credentials == ("[toy].token (TOY_TOKEN unset)",)
        ready = parse_definition(Path("toy.toml"), TOY_BOT, {"TOY_TOKEN": GOOD_TOKEN})
        assert ready.missing_credentials == () and ready.secrets() == [GOOD_TOKEN]
        assert ready.limits == TurnLimits()
        with pytest.raises(DefinitionError, match=r"a \[slack\] table in a 'toy' bot"):
            parse_definition(Path("toy.toml"), TOY_BOT + "[slack]\nbot_token = \"xoxb-1\"\n", {"TOY_TOKEN": "t"})

    def test_settings_and_validation_come_from_its_spec(self, toy: None) -> None:
        """TOY_API_URL is read with the other settings; a mistake in [toy] names `toy.<field>`."""
        settings = Settings.from_env({"TOY_API_URL": "http://127.0.0.1:9/toy"})
        assert settings.platform_settings["TOY_API_URL"] == "http://127.0.0.1:9/toy"
        definition = parse_definition(Path("toy.toml"), TOY_BOT, {"TOY_TOKEN": GOOD_TOKEN})
        config = validate_platform_table(definition, settings)
        assert isinstance(config, ToyConfig) and (config.api_url, config.greeting) == ("http://127.0.0.1:9/toy", "hi")
        broken = parse_definition(Path("toy.toml"), TOY_BOT.replace('greeting = "hi"', "greeting = 3\ncolour = 1"),
                                  {"TOY_TOKEN": GOOD_TOKEN})
        with pytest.raises(InvalidDefinition) as raised:
            validate_platform_table(broken, settings)
        assert [e.field for e in raised.value.errors] == ["toy.colour", "toy.greeting"]

    async def test_check_proves_its_credentials(
        self, toy: None, tmp_path: Path, chat_api: FakeChatAPI, keys: RedisKeys
    ) -> None:
        """`check` validates the table and asks the platform's probe about the token."""
        (tmp_path / "toy.toml").write_text(TOY_BOT, encoding="utf-8")
        env = {"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "REDIS_URL": redis_url(),
               "REDIS_KEY_PREFIX": keys.prefix, "TOY_TOKEN": GOOD_TOKEN}
        out = io.StringIO()
        code = await cli._check(Settings.from_env(env), load_definitions(tmp_path, env), tmp_path,
                                offline=False, out=out)
        assert f"{tmp_path / 'toy.toml'}: the toy platform at https://toy.invalid/api accepted the token" in out.getvalue()
        assert "bot 'toybot' (toy, app_id lunos-toy" in out.getvalue()
        assert "ERROR" not in out.getvalue() and code == 0

        env["TOY_TOKEN"] = "wrong"
        out = io.StringIO()
        await cli._check(Settings.from_env(env), load_definitions(tmp_path, env), tmp_path, offline=False, out=out)
        assert "ERROR" in out.getvalue() and "token rejected by the toy platform" in out.getvalue()

    async def test_the_runner_runs_a_bot_on_it(
        self, toy: None, chat_api: FakeChatAPI, keys: RedisKeys, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`run` builds the toy bot from its definition, serves its route on the shared server,
        shows it on /readyz, answers through the engine (commands included), and stops it on SIGTERM."""
        chat_api.script("test/model-a", Behaviour(text="Toy answer."))
        port = free_port()
        env = {"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "REDIS_URL": redis_url(),
               "REDIS_KEY_PREFIX": keys.prefix, "HOST": "127.0.0.1", "PORT": str(port), "TOY_TOKEN": GOOD_TOKEN}
        definition = parse_definition(Path("toy.toml"), TOY_BOT, env)
        built: list[ToyBot] = []
        was_built = asyncio.Event()
        build = runner.build_runtime

        def remember(*args: object, **kwargs: object) -> object:
            runtime = build(*args, **kwargs)  # type: ignore[arg-type]
            assert isinstance(runtime, ToyBot)
            built.append(runtime)
            was_built.set()
            return runtime

        monkeypatch.setattr(runner, "build_runtime", remember)
        async with Services(Settings.from_env(env)) as services:
            run = asyncio.create_task(runner.run_bots(services, [definition], stdin=io.StringIO()))
            try:
                async with asyncio.timeout(WAIT_S):
                    await was_built.wait()
                    await built[0].started.wait()
                base = f"http://127.0.0.1:{port}"
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{base}/readyz") as response:
                        assert (await response.json())["bots"] == {"toybot": True}
                    url = f"{base}/toy/toybot/messages"
                    async with http.post(url, json={"id": "m1", "user": "ada", "text": "hi there"}) as response:
                        answered = await response.json()
                    async with http.post(url, json={"id": "m2", "user": "ada", "text": "/help"}) as response:
                        helped = await response.json()
                assert answered == {"status": "answered", "replies": ["Toy answer."]}
                assert helped["status"] == "command" and "reset" in helped["replies"][0]
                assert chat_api.requests[0].headers["X-App-ID"] == "lunos-toy"
            finally:
                os.kill(os.getpid(), signal.SIGTERM)
                assert await run == 0
        assert not built[0].ready


def resolves(dotted: str) -> bool:
    """Whether `package.module.Name.attribute` names something real: a module, a module's name, a
    class attribute or a dataclass field."""
    module, *attrs = dotted.split(".")
    target: object = importlib.import_module(module)
    for part in attrs:
        if hasattr(target, part):
            target = getattr(target, part)
        elif dataclasses.is_dataclass(target) and part in {f.name for f in dataclasses.fields(target)}:
            return True
        elif isinstance(target, types.ModuleType):
            target = importlib.import_module(f"{target.__name__}.{part}")
        else:
            return False
    return True


class TestArchitectureDoc:
    """docs/architecture.md's ten steps name only modules, names and files that exist."""

    def test_how_to_add_a_platform_names_what_exists(self) -> None:
        """At most ten steps; each dotted name resolves, each path exists (the toy platform takes these steps)."""
        text = ARCHITECTURE.read_text(encoding="utf-8")
        section = text.split("## How to add a platform", 1)[1]
        steps = [line for line in section.splitlines() if re.match(r"^\d+\. ", line)]
        assert 1 <= len(steps) <= 10
        assert "sequenceDiagram" in text and "ReplyJournal" in text
        for name in re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`", section):
            if name.endswith(".py"):
                assert (ROOT / name).exists(), name
                continue
            assert resolves(name), name
        for path in re.findall(r"`((?:bots|tests|adapters|core)/[\w/<>.]*)`", section):
            if "<" not in path:
                assert (ROOT / path).exists(), path
