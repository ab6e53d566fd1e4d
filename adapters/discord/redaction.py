"""Keeps interaction tokens out of discord.py's log lines.

An interaction token lets whoever holds it answer, edit and delete as the bot in that conversation
for 15 minutes. discord.py puts it in the path of every interaction call
(`/interactions/{id}/{token}/callback`, `/webhooks/{application}/{token}/messages/@original`) and
logs those URLs (`discord.webhook.async_` on every response), and it logs whole gateway events,
INTERACTION_CREATE with its `token` included (`discord.gateway`, at debug level). The runner's
redactor knows the configured secrets, not these per-interaction ones, so `InteractionTokenFilter`
removes them from discord.py's records before any handler formats them.

What this module must not do: touch the process's handlers or levels (that is `bots.logging_setup`).
"""

from __future__ import annotations

import logging
import re

REDACTED = "[REDACTED]"
# The token is the path segment after the interaction's or application's id.
TOKEN_IN_PATH = re.compile(r"(/(?:interactions|webhooks)/\d+/)[^/?#\s'\"]+")
# A gateway event or payload printed as a dict or as JSON: 'token': '...' / "token": "...".
TOKEN_IN_PAYLOAD = re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]*""")
# Every logger discord.py 2.x creates (one per module: `logging.getLogger(__name__)`). A filter on a
# logger sees only the records made by that very logger, not its children's, so each is listed;
# loggers of modules imported later are caught by the prefix scan in `install_token_filter`.
DISCORD_LOGGERS = (
    "discord", "discord.client", "discord.gateway", "discord.http", "discord.shard", "discord.state",
    "discord.webhook.async_", "discord.webhook.sync", "discord.app_commands.tree",
    "discord.ui.view", "discord.ui.modal",
)


def redact_tokens(text: str) -> str:
    """`text` with every interaction (or webhook) token replaced by `REDACTED`."""
    text = TOKEN_IN_PATH.sub(lambda m: m.group(1) + REDACTED, text)
    return TOKEN_IN_PAYLOAD.sub(lambda m: m.group(1) + REDACTED, text)


class InteractionTokenFilter(logging.Filter):
    """Rewrites a record whose message (or traceback) holds a token; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if record.exc_info and record.exc_info[0] is not None:
            trace = logging.Formatter().formatException(record.exc_info)
            clean_trace = redact_tokens(trace)
            if clean_trace != trace:  # keep the traceback, but only as redacted text
                redacted = f"{redacted}\n{clean_trace}"
                record.exc_info, record.exc_text = None, None
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_token_filter() -> None:
    """Attach one `InteractionTokenFilter` to each of discord.py's loggers (once per process)."""
    names = set(DISCORD_LOGGERS) | {
        name for name in logging.root.manager.loggerDict if name.startswith("discord.")
    }
    for name in sorted(names):
        logger = logging.getLogger(name)
        if not any(isinstance(f, InteractionTokenFilter) for f in logger.filters):
            logger.addFilter(InteractionTokenFilter())
