"""`BotProfile`: the platform-neutral part of one bot's definition, as the engine needs it.

Built by `bots/` from a `bots/*.toml` file; platform tables ([slack], [discord]) stay there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MAX_MESSAGES = 40  # turns kept per conversation
DEFAULT_MAX_PROMPT_TOKENS = 8000  # estimated, system prompt and new message included
DEFAULT_HISTORY_TTL_S = 7 * 24 * 3600  # a conversation idle this long is forgotten
DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True)
class HistoryLimits:
    """How much of a conversation is remembered and sent."""

    max_messages: int = DEFAULT_MAX_MESSAGES
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS
    ttl_s: int = DEFAULT_HISTORY_TTL_S


@dataclass(frozen=True)
class BotProfile:
    """Who a bot is: its name, app ID (sent as X-App-ID), models and persona."""

    name: str
    platform: str
    app_id: str
    model: str
    fallback_models: tuple[str, ...] = ()
    system_prompt: str = "You are a helpful assistant."
    max_tokens: int = DEFAULT_MAX_TOKENS
    history: HistoryLimits = field(default_factory=HistoryLimits)
