"""Every exception lunos-bots raises on purpose, in one tree.

    BotError
    ├── ChatAPIError                 the chat-completions API could not give an answer
    │   ├── ChatTimeout              connect, first-token, gap or total deadline passed
    │   ├── RateLimited              429 (after honouring Retry-After)
    │   ├── ModelUnavailable         5xx, connection lost, broken stream
    │   ├── RequestRejected          400/401/403/404: retrying or falling back cannot help
    │   └── AllModelsFailed          every model of the chain failed (holds each attempt)
    ├── HistoryUnavailable           Redis could not be reached for history, locks or dedupe
    ├── DefinitionError              a bot definition is invalid (names file and field)
    └── PlatformError                a platform API call failed (raised by adapters)
        └── ReplyUndeliverable       the reply can no longer be shown (no permission, channel or
                                     message gone): stop sending, do not save the turn

Lower-layer exceptions (httpx, redis) are translated into these at the seam where they are
caught, with `raise ... from exc`, so callers never handle a library's exception type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class BotError(Exception):
    """Base of every lunos-bots error."""


class ChatAPIError(BotError):
    """The chat-completions API did not produce an answer on one attempt or on the whole chain."""

    def __init__(
        self, message: str, *, model: str | None = None, status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status = status
        self.retry_after = retry_after  # seconds the API asked us to wait, when it said


class ChatTimeout(ChatAPIError):
    """A connect, first-token, inter-chunk or total deadline passed."""


class RateLimited(ChatAPIError):
    """The API answered 429 (or said so in the stream)."""


class ModelUnavailable(ChatAPIError):
    """5xx, a dropped connection, an in-band error event or a malformed stream."""


class RequestRejected(ChatAPIError):
    """400/401/403/404: the request itself is wrong (bad key, unknown model); no fallback helps."""


@dataclass(frozen=True)
class FailedAttempt:
    """One failed try of one model, kept so the final error can say what happened."""

    model: str
    error: ChatAPIError


class AllModelsFailed(ChatAPIError):
    """Every model in `[model, *fallback_models]` failed; `attempts` lists each failure in order."""

    def __init__(self, attempts: Sequence[FailedAttempt]) -> None:
        summary = "; ".join(
            str(a.error) if str(a.error).startswith(a.model) else f"{a.model}: {a.error}" for a in attempts
        ) or "no attempt was made"
        super().__init__(f"all models failed ({summary})")
        self.attempts = tuple(attempts)

    @property
    def rate_limited(self) -> bool:
        """True when the last failure of every model was a rate limit."""
        last_per_model = {a.model: a.error for a in self.attempts}
        return bool(last_per_model) and all(isinstance(e, RateLimited) for e in last_per_model.values())


class HistoryUnavailable(BotError):
    """Redis did not answer; the turn goes on without history and the bot reports itself degraded."""


class DefinitionError(BotError):
    """A bot definition is invalid. The message names the file, the field and what was expected."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        super().__init__(f"{file}: {field}: {problem}")
        self.file = file
        self.field = field
        self.problem = problem


class PlatformError(BotError):
    """A Slack or Discord API call failed in a way the adapter could not absorb."""


class ReplyUndeliverable(PlatformError):
    """Raised by a sink when more calls cannot help: the bot may not post here, the channel is
    gone, or a moderator deleted the reply. The reply stops at once and is not reposted."""
