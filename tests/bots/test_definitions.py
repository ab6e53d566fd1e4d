"""Bot definitions: what loads, and errors that name the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.definitions import load_definitions, parse_definition, select
from bots.settings import DEFAULT_BOTS_DIR
from core.errors import DefinitionError

GOOD = """
name = "helper"
platform = "discord"
app_id = "helper-app"
model = "openai/gpt-4.1-mini"
fallback_models = ["google/gemini-2.0-flash"]
system_prompt = "You help ${TEAM}."
max_tokens = 500
[history]
max_messages = 10
ttl_days = 2
[discord]
token = "${DISCORD_TOKEN}"
"""
ENV = {"TEAM": "the platform team", "DISCORD_TOKEN": "discord-secret-token"}


def error_of(text: str, env: dict[str, str] | None = None, name: str = "bot.toml") -> DefinitionError:
    with pytest.raises(DefinitionError) as raised:
        parse_definition(Path(name), text, ENV if env is None else env)
    return raised.value


class TestParse:
    """One file."""

    def test_good_definition(self) -> None:
        """Every field lands in the profile; ${VAR} is expanded."""
        d = parse_definition(Path("helper.toml"), GOOD, ENV)
        p = d.profile
        assert (p.name, p.platform, p.app_id, p.model) == ("helper", "discord", "helper-app", "openai/gpt-4.1-mini")
        assert p.fallback_models == ("google/gemini-2.0-flash",)
        assert p.system_prompt == "You help the platform team."
        assert (p.max_tokens, p.history.max_messages, p.history.ttl_s) == (500, 10, 2 * 86400)
        assert d.platform_settings["token"] == "discord-secret-token"
        assert d.missing_credentials == ()
        assert d.secrets() == ["discord-secret-token"]

    def test_files_and_personas(self) -> None:
        """`vision` and `[attachments]` over their defaults; `[personas]` admins (Discord ids may be
        numbers) and the models a channel may choose besides the bot's own chain."""
        text = GOOD.replace("max_tokens = 500", "max_tokens = 500\nvision = true") + (
            "[attachments]\nmax_files = 2\n[personas]\nadmins = [123456789012345678, 'U2']\n"
            "allowed_models = ['x/big']\n")
        p = parse_definition(Path("helper.toml"), text, ENV).profile
        assert p.attachments.vision and p.attachments.max_files == 2
        assert p.attachments.max_file_bytes == 5_000_000
        assert p.personas.admins == ("123456789012345678", "U2")
        assert p.allowed_models == ("openai/gpt-4.1-mini", "google/gemini-2.0-flash", "x/big")
        plain = parse_definition(Path("helper.toml"), GOOD, ENV).profile
        assert not plain.attachments.vision and plain.personas.admins == ()

    def test_secrets_include_the_stripped_token(self) -> None:
        """A token read from a file-mounted secret ends in a newline; both forms are redacted."""
        d = parse_definition(Path("helper.toml"), GOOD, {**ENV, "DISCORD_TOKEN": "discord-secret-token\n"})
        assert d.secrets() == ["discord-secret-token\n", "discord-secret-token"]

    def test_unset_credential_marks_the_bot_not_the_file(self) -> None:
        """A token from an unset variable is 'missing credentials', not a load error."""
        d = parse_definition(Path("helper.toml"), GOOD, {"TEAM": "x"})
        assert d.missing_credentials == ("[discord].token (DISCORD_TOKEN unset)",)

    @pytest.mark.parametrize(("text", "field", "expected"), [
        ("name = 'x'\nplatform = \n", "(file)", "invalid TOML"),
        (GOOD.replace('platform = "discord"', 'platform = "irc"'), "platform", "unknown platform 'irc'"),
        (GOOD.replace('model = "openai/gpt-4.1-mini"', 'model = ""'), "model", "must not be empty"),
        (GOOD.replace('app_id = "helper-app"\n', ""), "app_id", "is required"),
        (GOOD.replace("max_tokens = 500", "max_tokens = -1"), "max_tokens", "positive integer"),
        (GOOD.replace('fallback_models = ["google/gemini-2.0-flash"]', "fallback_models = 'x'"),
         "fallback_models", "list"),
        ("colour = 'blue'\n" + GOOD, "colour", "unknown field"),
        (GOOD.replace("ttl_days = 2", "ttl_hours = 2"), "history.ttl_hours", "unknown field"),
        (GOOD.replace('name = "helper"', 'name = "Has Spaces"'), "name", "lowercase"),
        (GOOD.replace('["google/gemini-2.0-flash"]', '["openai/gpt-4.1-mini"]'), "fallback_models", "different"),
        (GOOD.replace('platform = "discord"', 'platform = "${NO_SUCH_PLATFORM_VAR}"'), "platform", "is not set"),
        ("vision = 'yes'\n" + GOOD, "vision", "true or false"),
        (GOOD + "[attachments]\nmax_files = 0\n", "attachments.max_files", "positive integer"),
        (GOOD + "[attachments]\nmax_pages = 3\n", "attachments.max_pages", "unknown field"),
        (GOOD + "[personas]\nadmins = 'U1'\n", "personas.admins", "list of non-empty strings"),
        (GOOD + "[personas]\nmoderators = []\n", "personas.moderators", "unknown field"),
    ])
    def test_errors_name_file_and_field(self, text: str, field: str, expected: str) -> None:
        """The message says which file, which field and what was expected."""
        error = error_of(text, name="bots/broken.toml")
        assert error.file == "bots/broken.toml" and error.field == field
        assert expected in str(error) and str(error).startswith("bots/broken.toml: ")

    def test_platform_from_the_environment(self) -> None:
        """${VAR} works in platform like in any other string."""
        text = GOOD.replace('platform = "discord"', 'platform = "${PLATFORM}"')
        assert parse_definition(Path("b.toml"), text, {**ENV, "PLATFORM": "discord"}).platform == "discord"

    def test_invalid_toml_gives_its_line(self) -> None:
        """tomllib's line and column are kept."""
        assert "line 3" in str(error_of('name = "a"\nplatform = "console"\nmodel = \n'))

    def test_unset_variable_outside_credentials(self) -> None:
        """${VAR} unset in an ordinary field names the field and the variable."""
        error = error_of(GOOD, {"DISCORD_TOKEN": "t"})
        assert error.field == "system_prompt" and "${TEAM} is not set" in str(error)


class TestDirectory:
    """A directory of definitions."""

    def test_duplicates_are_refused(self, tmp_path: Path) -> None:
        """A second file with the same name or app_id is an error on that file."""
        (tmp_path / "a.toml").write_text(GOOD)
        (tmp_path / "b.toml").write_text(GOOD.replace('app_id = "helper-app"', 'app_id = "other"'))
        (tmp_path / "c.toml").write_text(GOOD.replace('name = "helper"', 'name = "other"'))
        report = load_definitions(tmp_path, ENV)
        assert [d.name for d in report.definitions] == ["helper"]
        assert [(e.file.split("/")[-1], e.field) for e in report.errors] == [("b.toml", "name"), ("c.toml", "app_id")]

    def test_shipped_definitions_load(self) -> None:
        """bots/console.toml loads with no environment at all."""
        report = load_definitions(DEFAULT_BOTS_DIR, {})
        assert not report.errors
        assert [d.name for d in report.definitions] == ["console"]

    @pytest.mark.parametrize("example", ["slack-example.toml.example", "discord-example.toml.example"])
    def test_examples_are_valid(self, example: str) -> None:
        """The commented examples parse, and lack credentials until their variables are set."""
        path = DEFAULT_BOTS_DIR / example
        d = parse_definition(path, path.read_text(), {})
        assert d.missing_credentials

    def test_select_unknown_name(self, tmp_path: Path) -> None:
        """--only with an unknown bot says which names exist."""
        (tmp_path / "a.toml").write_text(GOOD)
        report = load_definitions(tmp_path, ENV)
        with pytest.raises(DefinitionError, match="no such bot"):
            select(report.definitions, ["nope"])
