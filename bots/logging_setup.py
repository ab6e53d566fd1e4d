"""structlog, configured once for the process, with secrets redacted from every line.

Library loggers (slack-bolt, discord.py, aiohttp, httpx) go through the same processors, so a
token a library prints is redacted too.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from core.engine import TURN_STARTED_AT

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 6  # shorter values would redact ordinary words
SENSITIVE_KEYS = frozenset({"authorization", "api_key", "token", "bot_token", "app_token",
                            "signing_secret", "password", "secret"})
NOISY_LIBRARIES = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "aiohttp.access": logging.WARNING,
                   "discord.gateway": logging.WARNING, "slack_bolt": logging.WARNING}


class SecretRedactor:
    """A structlog processor: replaces every known secret wherever it appears in an event, and the
    value of any key named like a secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_CHARS and secret not in self._secrets:
                self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)  # longest first: a token containing another

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: REDACTED if str(k).lower() in SENSITIVE_KEYS and v else self.scrub(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(repr(value))
        return value

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        scrubbed: MutableMapping[str, Any] = {}
        for key, value in event_dict.items():
            if key.lower() in SENSITIVE_KEYS and value:
                scrubbed[key] = REDACTED
            elif key == "exc_info" and value:
                # Render the traceback now so the redactor sees its text.
                scrubbed["exception"] = self.scrub(_format_exc_info(value))
            else:
                scrubbed[key] = self.scrub(value)
        return dict(scrubbed)


BAD_SIGNATURE_PREFIX = "Invalid request signature detected"
# Bolt reads SLACK_BOT_TOKEN from the environment by itself and warns that the client we give it
# wins. That is by design (each bot's token comes from its definition, through `authorize`), so
# the warning, printed once per Slack bot at every start, is dropped.
BOLT_TOKEN_WARNING = "As you gave `client` as well, `token` will be unused."


class LibraryNoise(logging.Filter):
    """Makes library log lines fit for a log stream (installed on the handler, so it sees every
    logger, including Bolt's per-app `lunos-bots.<bot>` ones):

    - Bolt's bad-signature line carries the whole request body (a stranger's payload, or a real
      event with user text): it is cut to the signature and timestamp.
    - slack-sdk's Socket Mode client logs a full traceback for every failed (re)connect, every
      ~10 s while Slack is unreachable: one line with the error is enough.
    - Bolt's start-up warning about SLACK_BOT_TOKEN (`BOLT_TOKEN_WARNING`) is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == BOLT_TOKEN_WARNING:
            return False
        if message.startswith(BAD_SIGNATURE_PREFIX):
            record.msg = message.split(", body:", 1)[0] + ", body not logged)"
            record.args = None
        elif record.exc_info and message.startswith(("Failed to connect", "Failed to retrieve WSS URL")):
            record.msg = f"{message} (traceback not logged)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def add_turn_latency(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Every line of a turn carries `latency_ms` since the turn began (the engine binds the start)."""
    started = event_dict.pop(TURN_STARTED_AT, None)
    if isinstance(started, float) and "latency_ms" not in event_dict:
        event_dict["latency_ms"] = int((time.monotonic() - started) * 1000)
    return event_dict


def _format_exc_info(exc_info: Any) -> str:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        return "".join(traceback.format_exception(*exc_info))
    return ""


def configure_logging(
    *, level: str, fmt: str, redactor: SecretRedactor, stream: TextIO | None = None
) -> None:
    """The one structlog.configure call of the process."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_turn_latency,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
        redactor,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(LibraryNoise())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, minimum in NOISY_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(minimum, root.level))
