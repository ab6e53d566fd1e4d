"""Secrets never reach a log line: ours, a library's, or a traceback's."""

from __future__ import annotations

import io
import json
import logging

import structlog

from bots.logging_setup import REDACTED, SecretRedactor, configure_logging

API_KEY = "sk-lunos-very-secret-key-123"
SLACK_TOKEN = "xoxb-not-a-real-token-but-long"
DISCORD_TOKEN = "discord.token.value.xyz"


class TestRedaction:
    """The redaction processor, configured the way the runner configures it."""

    def test_secrets_are_redacted_everywhere(self) -> None:
        """In messages, values, nested structures, stdlib loggers and tracebacks."""
        out = io.StringIO()
        redactor = SecretRedactor([API_KEY, SLACK_TOKEN])
        redactor.add([DISCORD_TOKEN])
        configure_logging(level="DEBUG", fmt="json", redactor=redactor, stream=out)
        try:
            log = structlog.get_logger("test")
            log.info(f"calling with {API_KEY}", headers={"Authorization": f"Bearer {API_KEY}"},
                     nested=[{"x": SLACK_TOKEN}], token="whatever-named-token")
            logging.getLogger("slack_bolt.fake").warning("token %s refused", SLACK_TOKEN)
            logging.getLogger("discord.client").error("login with %s", DISCORD_TOKEN)
            try:
                raise RuntimeError(f"bad auth {API_KEY}")
            except RuntimeError:
                log.exception("crashed")
        finally:
            logging.getLogger().handlers.clear()
            structlog.reset_defaults()
        text = out.getvalue()
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == 4
        for secret in (API_KEY, SLACK_TOKEN, DISCORD_TOKEN, "whatever-named-token"):
            assert secret not in text
        assert REDACTED in lines[0]["event"] and lines[0]["token"] == REDACTED
        assert "RuntimeError" in lines[3]["exception"]

    def test_short_values_are_not_treated_as_secrets(self) -> None:
        """A tiny or empty 'secret' would redact ordinary words; it is ignored."""
        redactor = SecretRedactor(["", "ab"])
        assert redactor.scrub("abc about") == "abc about"
