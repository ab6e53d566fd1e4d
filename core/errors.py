"""Every exception lunos-bots raises on purpose, in one tree.

    BotError
    ├── ChatAPIError                 the chat-completions API could not give an answer
    │   ├── ChatTimeout              connect, first-token, gap or total deadline passed
    │   ├── RateLimited              429 (after honouring Retry-After)
    │   ├── ModelUnavailable         5xx, connection lost, broken stream
    │   ├── RequestRejected          400/402/401/403/404: retrying cannot help
    │   │   ├── AuthenticationFailed 401/403: LUNOS_API_KEY refused
    │   │   ├── OutOfCredits         402: the account has no credits left
    │   │   ├── ModelNotFound        400/404 naming the model: falls back to the next model
    │   │   └── EndpointNotFound     404 on the endpoint itself: LUNOS_BASE_URL is wrong
    │   └── AllModelsFailed          every model of the chain failed (holds each attempt)
    ├── HistoryUnavailable           Redis could not be reached for history, locks or dedupe
    ├── DefinitionError              a bot definition is invalid (names file and field)
    │   └── InvalidDefinition        several mistakes in one file, reported together
    └── PlatformError                a platform API call failed (raised by adapters)
        └── ReplyUndeliverable       the reply can no longer be shown (no permission, channel or
                                     message gone): stop sending, do not save the turn

Lower-layer exceptions (httpx, redis) are translated into these at the seam where they are
caught, with `raise ... from exc`, so callers never handle a library's exception type.
`Problems` collects the `DefinitionError`s of one definition (the loader's and each platform's
table validation), so every mistake in a file is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class BotError(Exception):
    """Base of every lunos-bots error."""


class ChatAPIError(BotError):
    """The chat-completions API did not produce an answer on one attempt or on the whole chain."""

    # What an operator should do about it: one sentence for logs and `lunos-bots check`.
    hint = "the chat API did not answer; it may be down or overloaded"

    def __init__(
        self, message: str, *, model: str | None = None, status: int | None = None,
        retry_after: float | None = None, api_message: str = "",
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status = status
        self.retry_after = retry_after  # seconds the API asked us to wait, when it said
        self.api_message = api_message  # the API's own words, as it gave them (shortened)


class ChatTimeout(ChatAPIError):
    """A connect, first-token, inter-chunk or total deadline passed."""

    hint = "the chat API did not answer in time; it may be overloaded (see LUNOS_*_TIMEOUT_S)"


class RateLimited(ChatAPIError):
    """The API answered 429 (or said so in the stream)."""

    hint = "the chat API is rate-limiting this key; wait, or raise the key's limits"


class ModelUnavailable(ChatAPIError):
    """5xx, a dropped connection, an in-band error event or a malformed stream."""

    hint = "the chat API is unavailable (server error or connection lost); it usually recovers"


class RequestRejected(ChatAPIError):
    """400/401/402/403/404: the request itself is wrong; retrying it cannot help. Only an unknown
    model (`ModelNotFound`) moves on to the next model of the chain."""

    hint = "the chat API rejected the request"


class AuthenticationFailed(RequestRejected):
    """401/403: the API key is wrong, revoked or not allowed to use this API."""

    hint = "the chat API refused the key: check LUNOS_API_KEY (and that it belongs to LUNOS_BASE_URL)"


class OutOfCredits(RequestRejected):
    """402: the account behind the key has run out of credits."""

    hint = "the chat API account is out of credits: top it up, or use another LUNOS_API_KEY"


class ModelNotFound(RequestRejected):
    """400/404 naming the model: this model id is unknown to the API (a typo in `model` or
    `fallback_models`, or a model retired). The next model of the chain is tried."""

    hint = "the chat API does not know this model: fix `model` / `fallback_models` in the bot definition"


class EndpointNotFound(RequestRejected):
    """404 on the endpoint itself (no model named): the base URL does not point at the API."""

    hint = ("the chat API endpoint was not found: check LUNOS_BASE_URL "
            "(it usually ends in /v1, e.g. https://api.lunos.tech/v1)")


@dataclass(frozen=True)
class FailedAttempt:
    """One failed try of one model, kept so the final error can say what happened."""

    model: str
    error: ChatAPIError


class AllModelsFailed(ChatAPIError):
    """Every model in `[model, *fallback_models]` failed; `attempts` lists each failure in order."""

    hint = "every model of the bot's chain failed; see the attempts"

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


class InvalidDefinition(DefinitionError):
    """Every mistake found in one file, so the user fixes them in one go. Reads as the first one,
    followed by the others; `errors` holds each."""

    def __init__(self, errors: Sequence[DefinitionError]) -> None:
        if not errors:
            raise ValueError("InvalidDefinition needs at least one error")
        first = errors[0]
        others = "; ".join(f"{e.field}: {e.problem}" for e in errors[1:])
        super().__init__(first.file, first.field, first.problem + (f"; also {others}" if others else ""))
        self.errors = tuple(errors)


class PlatformError(BotError):
    """A Slack or Discord API call failed in a way the adapter could not absorb."""


class ReplyUndeliverable(PlatformError):
    """Raised by a sink when more calls cannot help: the bot may not post here, the channel is
    gone, or a moderator deleted the reply. The reply stops at once and is not reposted."""


class Problems:
    """The `DefinitionError`s of one file, collected so every mistake is reported at once."""

    def __init__(self) -> None:
        self.errors: list[DefinitionError] = []

    def attempt(self, check: Callable[[], T], default: T) -> T:
        """`check()`, or `default` after recording the error it raised."""
        try:
            return check()
        except InvalidDefinition as exc:
            self.errors.extend(exc.errors)
        except DefinitionError as exc:
            self.errors.append(exc)
        return default

    def add(self, error: DefinitionError) -> None:
        self.errors.append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidDefinition(self.errors) if len(self.errors) > 1 else self.errors[0]
