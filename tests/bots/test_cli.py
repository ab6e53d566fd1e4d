"""`lunos-bots` as a user runs it: a real process, the fake chat API, real Redis."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI

CLI = [sys.executable, "-m", "bots.cli"]
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

    async def test_good_setup_passes_online(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Shipped definitions, Redis answering, GET /models with the key: exit 0."""
        code, out, err = await run_cli("check", env=base_env(chat_api, prefix))
        assert code == 0, out + err
        assert "Redis answers PING" in out and "GET " in out and "check passed" in out

    async def test_bad_key_fails_online(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """A key the API refuses makes check fail, without printing the key."""
        env = base_env(chat_api, prefix, LUNOS_API_KEY="sk-wrong-key-abcdef")
        code, out, err = await run_cli("check", env=env)
        assert code == 1 and "401" in out and "sk-wrong-key" not in out + err


    async def test_without_a_key_check_still_reports_everything(self, prefix: str) -> None:
        """No LUNOS_API_KEY: check validates the rest and lists the key as one of its errors."""
        code, out, _ = await run_cli("check", env=base_env(None, prefix))
        assert code == 1
        assert "bot 'console'" in out and "Redis answers PING" in out
        assert "ERROR LUNOS_API_KEY unset" in out and "check failed" in out

    async def test_bad_log_level_is_one_line(self, prefix: str) -> None:
        """An invalid setting names the variable; no traceback."""
        code, _, err = await run_cli("check", "--offline", env=base_env(None, prefix, LOG_LEVEL="LOUD"))
        assert code == 2 and err.strip().splitlines() == [
            "lunos-bots: LOG_LEVEL='LOUD': expected one of DEBUG, INFO, WARNING, ERROR"]


class TestUsage:
    """`lunos-bots usage`."""

    async def test_usage_after_a_chat(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Requests and tokens per app ID, day and model."""
        env = base_env(chat_api, prefix)
        await run_cli("chat", env=env, stdin="one\ntwo\n")
        code, out, _ = await run_cli("usage", "--app-id", "lunos-bots-console", env=env)
        assert code == 0
        row = next(line for line in out.splitlines() if "lunos-bots-console" in line)
        assert row.split()[1:4] == ["lunos-bots-console", "openai/gpt-4.1-mini", "2"]
