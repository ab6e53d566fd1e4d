"""`lunos-bots` as a user runs it: a real process, the fake chat API, real Redis."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI

CLI = [sys.executable, "-m", "bots.cli"]
SHIPPED_MODELS = ("openai/gpt-4.1-mini", "google/gemini-2.0-flash", "test/model-a")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    value = f"lbtest-cli-{uuid.uuid4().hex[:10]}"
    yield value
    async for key in redis.scan_iter(match=f"{value}:*"):
        await redis.delete(key)


async def run_cli(*args: str, env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate(stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def base_env(chat_api: FakeChatAPI | None, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNOS_", "SLACK_", "DISCORD_"))}
    env.update({"REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": prefix, "LOG_FORMAT": "json"})
    if chat_api is not None:
        env.update({"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url})
    env.update(extra)
    return env


class TestChat:
    """`lunos-bots chat console` with piped lines."""

    async def test_answers_piped_lines_with_memory(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Each line is answered, the second turn remembers the first, X-App-ID is the console bot's."""
        code, out, err = await run_cli("chat", "console", env=base_env(chat_api, prefix),
                                       stdin="my name is Ada\nwhat is my name?\n/help\n")
        assert code == 0, err
        assert "You said: my name is Ada. (I have seen 1 user messages" in out
        assert "You said: what is my name?. (I have seen 2 user messages" in out
        assert "reset" in out
        assert len(chat_api.requests) == 2
        second = chat_api.requests[1]
        assert second.headers["X-App-ID"] == "lunos-bots-console"
        assert second.body is not None and second.body["model"] == "openai/gpt-4.1-mini"
        assert [m["content"] for m in second.body["messages"]][1] == "my name is Ada"
        assert TEST_API_KEY not in out + err

    async def test_history_survives_processes(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """With REDIS_URL the conversation continues in a new process; /reset forgets it."""
        env = base_env(chat_api, prefix)
        await run_cli("chat", env=env, stdin="first\n")
        _, out, _ = await run_cli("chat", env=env, stdin="second\n/reset\nthird\n")
        assert "I have seen 2 user messages" in out and "forgotten" in out
        assert "You said: third. (I have seen 1 user messages" in out

    async def test_streams_to_stdout(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Text is printed as it arrives: the first bytes come before the answer is complete."""
        chat_api.script("openai/gpt-4.1-mini", Behaviour(text="slow answer " * 5, token_delay_s=0.05))
        proc = await asyncio.create_subprocess_exec(
            *CLI, "chat", cwd=ROOT, env=base_env(chat_api, prefix), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        async with asyncio.timeout(20):
            first = await proc.stdout.readuntil(b"slow answer")
            request = chat_api.requests[0]
            assert not request.finished.is_set(), "output arrived only after the stream ended"
            proc.stdin.close()
            rest = await proc.stdout.read()
            await proc.wait()
        assert b"slow answer" in first + rest

    async def test_missing_key_is_one_clear_line(self, prefix: str) -> None:
        """No LUNOS_API_KEY: exit 2 and one line that says what to do."""
        code, _, err = await run_cli("chat", env=base_env(None, prefix))
        assert code == 2 and "LUNOS_API_KEY is not set" in err and len(err.strip().splitlines()) == 1


class TestCheck:
    """`lunos-bots check`."""

    async def test_broken_definition_names_file_and_field(self, tmp_path: Path, prefix: str) -> None:
        """Exit 1; the report names the file and the field."""
        (tmp_path / "bad.toml").write_text('name = "bad"\nplatform = "console"\napp_id = "x"\nmodel = ""\n')
        code, out, _ = await run_cli("check", "--offline", "--bots", str(tmp_path), env=base_env(None, prefix))
        assert code == 1
        assert f"{tmp_path / 'bad.toml'}: model: must not be empty" in out

    async def test_missing_credentials_are_errors(self, tmp_path: Path, prefix: str) -> None:
        """A Slack bot without its token is reported, naming the variable."""
        example = (ROOT / "bots" / "slack-example.toml.example").read_text()
        (tmp_path / "support.toml").write_text(example)
        code, out, _ = await run_cli("check", "--offline", "--bots", str(tmp_path), env=base_env(None, prefix))
        assert code == 1 and "SLACK_BOT_TOKEN unset" in out

    async def test_platform_table_errors_are_reported(self, tmp_path: Path, prefix: str) -> None:
        """A bad [discord] field is caught by check, not only at run."""
        example = (ROOT / "bots" / "discord-example.toml.example").read_text()
        (tmp_path / "helper.toml").write_text(example + "\nallow_dms = \"sometimes\"\n")
        env = base_env(None, prefix, DISCORD_TOKEN="discord-test-token")
        code, out, _ = await run_cli("check", "--offline", "--bots", str(tmp_path), env=env)
        assert code == 1 and "discord.allow_dms" in out

    async def test_good_setup_passes_online(self, prefix: str) -> None:
        """Shipped definitions, Redis answering, GET /models listing each configured model: exit 0."""
        async with FakeChatAPI(api_key=TEST_API_KEY, models=SHIPPED_MODELS) as chat_api:
            code, out, err = await run_cli("check", env=base_env(chat_api, prefix))
        assert code == 0, out + err
        assert f"ok    Redis at {redis_url()} answers PING" in out and "check passed" in out
        assert "ok    GET " in out and "openai/gpt-4.1-mini, google/gemini-2.0-flash listed by the API" in out

    async def test_models_the_api_does_not_list_fail(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """A configured model missing from GET /models is an error naming it."""
        code, out, _ = await run_cli("check", env=base_env(chat_api, prefix))
        assert code == 1
        assert "ERROR" in out and "not listed by the API: openai/gpt-4.1-mini, google/gemini-2.0-flash" in out

    async def test_bad_key_fails_online(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """A key the API refuses makes check fail, without printing the key."""
        env = base_env(chat_api, prefix, LUNOS_API_KEY="sk-wrong-key-abcdef")
        code, out, err = await run_cli("check", env=env)
        assert code == 1 and "401" in out and "sk-wrong-key" not in out + err


    async def test_without_a_key_check_still_reports_everything(self, prefix: str) -> None:
        """No LUNOS_API_KEY: check validates the rest and lists the key as one of its errors."""
        code, out, _ = await run_cli("check", env=base_env(None, prefix))
        assert code == 1
        assert "bot 'console'" in out and "answers PING" in out
        assert "ERROR LUNOS_API_KEY unset" in out and "check failed" in out

    async def test_bad_log_level_is_one_line(self, prefix: str) -> None:
        """An invalid setting names the variable; no traceback."""
        code, _, err = await run_cli("check", "--offline", env=base_env(None, prefix, LOG_LEVEL="LOUD"))
        assert code == 2 and err.strip().splitlines() == [
            "lunos-bots: LOG_LEVEL='LOUD': expected one of DEBUG, INFO, WARNING, ERROR"]


class TestUsage:
    """`lunos-bots usage`."""

    async def test_usage_after_a_chat(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Requests and tokens per app ID, day and model, with the bot the app ID belongs to."""
        env = base_env(chat_api, prefix)
        await run_cli("chat", env=env, stdin="one\ntwo\n")
        code, out, _ = await run_cli("usage", "--app-id", "lunos-bots-console", env=env)
        assert code == 0
        row = next(line for line in out.splitlines() if "lunos-bots-console" in line)
        assert row.split()[1:5] == ["lunos-bots-console", "console", "openai/gpt-4.1-mini", "2"]
        assert row.split()[-2:] == ["0", "0"]  # no 👍 / 👎 yet


SLACK_BOT = """
name = "desk"
platform = "slack"
app_id = "lunos-desk"
model = "test/model-a"
[slack]
bot_token = "${SLACK_BOT_TOKEN}"
app_token = "${SLACK_APP_TOKEN}"
"""
DISCORD_BOT = """
name = "helper"
platform = "discord"
app_id = "lunos-helper"
model = "test/model-b"
[discord]
token = "${DISCORD_TOKEN}"
"""
DISCORD_TOKEN = "discord-token-for-check-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


class TestCheckTellsTheTruth:
    """`check` fails where `run` would, and proves each credential the way `run` uses it."""

    async def test_offline_without_a_key_fails(self, prefix: str) -> None:
        """run refuses to start without LUNOS_API_KEY, so check --offline fails too."""
        code, out, _ = await run_cli("check", "--offline", env=base_env(None, prefix))
        assert code == 1 and "ERROR LUNOS_API_KEY unset" in out and "online checks skipped" in out

    async def test_redis_line_names_the_url_and_the_cause(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """The URL with its password redacted, and "connection refused"."""
        port = free_port()
        env = base_env(chat_api, prefix, REDIS_URL=f"redis://:hunter2pass@127.0.0.1:{port}/0")
        code, out, err = await run_cli("check", "--offline", env=env)
        assert code == 1
        assert f"ERROR Redis at redis://***@127.0.0.1:{port}/0: connection refused; start Redis or fix REDIS_URL" in out
        assert "hunter2pass" not in out + err

    async def test_empty_bots_dir_is_named(self, tmp_path: Path, prefix: str) -> None:
        """--bots DIR is the directory reported, and an empty one says so."""
        code, out, _ = await run_cli("check", "--offline", "--bots", str(tmp_path),
                                     env=base_env(None, prefix, LUNOS_API_KEY="k"))
        assert code == 1 and f"ERROR no bot definitions in {tmp_path} (*.toml)" in out
        assert "credentials" not in out

    async def test_every_mistake_of_a_file_at_once(self, tmp_path: Path, prefix: str) -> None:
        """Three mistakes in one file (and two in its [discord] table of another): five lines."""
        (tmp_path / "bad.toml").write_text('name = "Bad Name"\nplatform = "console"\napp_id = "x"\n'
                                           'model = ""\nmax_tokens = -1\ncolour = "blue"\n')
        (tmp_path / "disc.toml").write_text(DISCORD_BOT + 'allow_dms = "yes"\nguild_ids = ["abc"]\n')
        env = base_env(None, prefix, LUNOS_API_KEY="k", DISCORD_TOKEN=DISCORD_TOKEN)
        code, out, _ = await run_cli("check", "--offline", "--bots", str(tmp_path), env=env)
        assert code == 1
        bad = str(tmp_path / "bad.toml")
        for field in ("colour: unknown field", "name: expected lowercase", "model: must not be empty",
                      "max_tokens: expected a positive integer"):
            assert f"ERROR {bad}: {field}" in out, out
        disc = str(tmp_path / "disc.toml")
        assert f"ERROR {disc}: discord.guild_ids[0]" in out and f"ERROR {disc}: discord.allow_dms" in out

    async def test_slack_tokens_are_proved(self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path) -> None:
        """auth.test with the bot token and apps.connections.open with the app token, as run uses them."""
        (tmp_path / "desk.toml").write_text(SLACK_BOT)
        async with FakeSlackAPI() as fake:
            good = base_env(chat_api, prefix, SLACK_API_URL=fake.base_url, SLACK_BOT_TOKEN=fake.bot_token,
                            SLACK_APP_TOKEN=fake.app_token)
            _, ok_out, _ = await run_cli("check", "--bots", str(tmp_path), env=good)
            bad = {**good, "SLACK_BOT_TOKEN": "xoxb-wrong", "SLACK_APP_TOKEN": "xapp-wrong"}
            code, out, err = await run_cli("check", "--bots", str(tmp_path), env=bad)
            assert [c.method for c in fake.calls].count("apps.connections.open") == 2
        assert "Slack accepted the tokens (auth.test and apps.connections.open (Socket Mode))" in ok_out
        assert code == 1
        assert "bot_token rejected by auth.test (invalid_auth); check [slack].bot_token" in out
        assert "app_token rejected by apps.connections.open (invalid_auth); check [slack].app_token" in out
        assert "xoxb-wrong" not in out + err

    async def test_discord_token_is_proved(self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path) -> None:
        """GET /users/@me with the bot token, as discord.py's login does."""
        (tmp_path / "helper.toml").write_text(DISCORD_BOT)
        async with FakeDiscord(expected_token=DISCORD_TOKEN) as fake:
            env = base_env(chat_api, prefix, DISCORD_API_URL=fake.api_base, DISCORD_TOKEN=DISCORD_TOKEN)
            code, out, _ = await run_cli("check", "--bots", str(tmp_path), env=env)
            _, bad_out, _ = await run_cli("check", "--bots", str(tmp_path),
                                          env={**env, "DISCORD_TOKEN": "not-the-token-0000"})
        assert code == 0 and "ok    " in out and "Discord accepted the token (GET /users/@me)" in out
        assert "token rejected by GET /users/@me (HTTP 401); check [discord].token" in bad_out

    async def test_wrong_base_url_says_check_lunos_base_url(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """A base URL without /v1: the 404 is about the endpoint, and the line says what to fix."""
        env = base_env(chat_api, prefix, LUNOS_BASE_URL=chat_api.base_url.removesuffix("/v1"))
        code, out, _ = await run_cli("check", env=env)
        assert code == 1 and "HTTP 404" in out and "check LUNOS_BASE_URL" in out


class TestEverydayMistakes:
    """One line naming the setting and the fix, a non-zero exit, never a traceback."""

    @pytest.mark.parametrize("command", [["check", "--offline"], ["chat"], ["run"], ["usage"]])
    async def test_redis_url_without_a_scheme(self, chat_api: FakeChatAPI, prefix: str, command: list[str]) -> None:
        """REDIS_URL=localhost:6379 names REDIS_URL and shows the URL with a scheme."""
        code, _, err = await run_cli(*command, env=base_env(chat_api, prefix, REDIS_URL="localhost:6379"))
        assert code == 2 and one_line(err) == (
            "lunos-bots: REDIS_URL='localhost:6379' has no scheme: use redis://localhost:6379/0 "
            "(rediss:// for TLS, unix:///path/to/socket), or unset it for the embedded store")

    async def test_usage_with_redis_unreachable(self, prefix: str) -> None:
        """usage against a Redis that refuses connections: one line naming REDIS_URL."""
        port = free_port()
        code, _, err = await run_cli("usage", env=base_env(None, prefix, REDIS_URL=f"redis://127.0.0.1:{port}/0"))
        assert code == 2 and one_line(err) == (
            f"lunos-bots: REDIS_URL: Redis at redis://127.0.0.1:{port}/0 is unreachable (connection refused); "
            "start Redis or fix REDIS_URL")

    async def test_usage_days_must_be_positive(self, prefix: str) -> None:
        """--days 0 is refused by the parser."""
        code, _, err = await run_cli("usage", "--days", "0", env=base_env(None, prefix))
        assert code == 2 and "--days: expected at least 1 day, got 0" in err

    async def test_version(self, prefix: str) -> None:
        """--version prints the installed version."""
        code, out, _ = await run_cli("--version", env=base_env(None, prefix))
        assert code == 0 and out.strip() == f"lunos-bots {importlib.metadata.version('lunos-bots')}"

    async def test_check_into_a_closed_pipe(self, prefix: str) -> None:
        """`check | head` where head has gone: no BrokenPipeError, no traceback, exit 141."""
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the first line is written
        try:
            proc = await asyncio.create_subprocess_exec(
                *CLI, "check", "--offline", cwd=ROOT, env=base_env(None, prefix, LUNOS_API_KEY="k"),
                stdin=asyncio.subprocess.DEVNULL, stdout=write_end, stderr=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(write_end)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
        assert proc.returncode == 141 and err == b""


class TestTerminalCommands:
    """Commands in `chat`, piped (the terminal behaviour is in TestTerminal)."""

    async def test_unknown_command_is_refused_with_the_list(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """/frobnicate is not sent to the model; the answer lists the commands."""
        code, out, _ = await run_cli("chat", env=base_env(chat_api, prefix), stdin="/frobnicate\n")
        assert code == 0 and "unknown command /frobnicate; commands: /help, /quit, /reset" in out
        assert chat_api.requests == []

    async def test_help_is_written_for_the_terminal(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """No "mention me": the terminal's commands, the continuation rule and Ctrl-C."""
        _, out, _ = await run_cli("chat", env=base_env(chat_api, prefix), stdin="/help\n")
        assert "mention" not in out.lower() and "/quit" in out and "Ctrl-C" in out and "end a line with \\" in out

    async def test_backslash_continues_a_message(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """A line ending in a backslash continues: two lines, one message, one request."""
        await run_cli("chat", env=base_env(chat_api, prefix), stdin="first line\\\nsecond line\n/quit\nignored\n")
        [request] = chat_api.requests
        assert request.body is not None and request.body["messages"][-1]["content"] == "first line\nsecond line"

    async def test_logs_stay_off_the_conversation(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Piped: the conversation on stdout, only warnings on stderr (no info lines)."""
        chat_api.script("openai/gpt-4.1-mini", Behaviour(kind="status", status=500))
        chat_api.script("google/gemini-2.0-flash", Behaviour(text="from the fallback"))
        code, out, err = await run_cli("chat", env=base_env(chat_api, prefix), stdin="hi\n")
        assert code == 0 and "from the fallback" in out and '"event"' not in out
        assert "chat.attempt_failed" in err and "redis.configured" not in err
