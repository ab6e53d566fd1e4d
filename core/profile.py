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
class AttachmentLimits:
    """What a bot reads of the files sent with a message (`core.attachments`). Images reach the
    model only with `vision` (the model must accept image parts); text files always, inlined."""

    vision: bool = False
    max_files: int = 4  # per message; the rest are refused with a note
    max_file_bytes: int = 5_000_000  # per image (sent base64, a third larger) or text file
    max_total_bytes: int = 10_000_000  # all files of one message together
    max_text_chars: int = 20_000  # of one text file inlined; a longer one is cut with a note


@dataclass(frozen=True)
class PersonaPolicy:
    """Who may give a channel its own persona (`core.personas`) and which models it may choose."""

    admins: tuple[str, ...] = ()  # platform user ids; Slack also accepts workspace admins and owners
    allowed_models: tuple[str, ...] = ()  # besides the bot's own model and fallbacks


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
    attachments: AttachmentLimits = field(default_factory=AttachmentLimits)
    personas: PersonaPolicy = field(default_factory=PersonaPolicy)

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """Models a channel persona may name: the bot's own chain, then `personas.allowed_models`."""
        chain = (self.model, *self.fallback_models, *self.personas.allowed_models)
        return tuple(dict.fromkeys(chain))
