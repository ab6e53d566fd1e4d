"""Per-channel personas: one channel's own model, fallbacks or system prompt, set by an admin at
run time (Slack `/lunos`, Discord `/persona`) and kept in Redis per bot and channel.

`PersonaStore` reads and writes them; `PersonaCommands` is the command both platforms share
(validation, wording), so the adapters only parse their platform's command shape and decide who is
an admin. `Persona.apply` gives the engine the profile a turn in that channel runs with.

Platform-neutral: it must not import adapters, bots or any platform library. Redis trouble while
reading degrades to "no persona" (the bot's own settings), never to a failed turn.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.profile import BotProfile
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import ConversationKey

log = structlog.get_logger(__name__)

MAX_PROMPT_CHARS = 4_000  # a channel's system prompt; longer ones belong in the bot definition
FIELDS = ("model", "fallbacks", "prompt")
USAGE = (
    "• `show` — this channel's persona\n"
    "• `set model <model>` — answer here with another model\n"
    "• `set fallbacks <model> [<model>…]` — or `set fallbacks none`\n"
    "• `set prompt <text>` — this channel's system prompt\n"
    "• `unset model|fallbacks|prompt|all` — back to the bot's own setting"
)


class PersonaUnavailable(Exception):
    """The store could not be reached to change a persona (reads degrade instead)."""


@dataclass(frozen=True)
class Persona:
    """What a channel overrides; None keeps the bot's own setting."""

    model: str | None = None
    fallback_models: tuple[str, ...] | None = None
    system_prompt: str | None = None

    @property
    def empty(self) -> bool:
        return self.model is None and self.fallback_models is None and self.system_prompt is None

    def apply(self, profile: BotProfile) -> BotProfile:
        """`profile` as it answers in this channel. A channel model keeps the bot's fallbacks
        (minus itself) unless the channel sets its own. Models the bot no longer allows (its
        definition changed since the persona was set) are ignored."""
        allowed = profile.allowed_models
        stale = [m for m in (self.model, *(self.fallback_models or ())) if m is not None and m not in allowed]
        if stale:
            log.warning("persona.model_not_allowed", models=stale, note="using the bot's own instead")
        model = self.model if self.model in allowed else profile.model
        if self.fallback_models is not None:
            fallbacks = tuple(m for m in self.fallback_models if m in allowed)
        else:
            fallbacks = profile.fallback_models if model == profile.model else (
                tuple(m for m in (profile.model, *profile.fallback_models) if m != model))
        fallbacks = tuple(m for m in fallbacks if m != model)
        return dataclasses.replace(
            profile, model=model, fallback_models=fallbacks,
            system_prompt=self.system_prompt if self.system_prompt is not None else profile.system_prompt,
        )

    def describe(self) -> list[str]:
        """One line per override, for `help` and `show`."""
        lines = []
        if self.model is not None:
            lines.append(f"model `{self.model}`")
        if self.fallback_models is not None:
            lines.append("fallbacks " + (", ".join(f"`{m}`" for m in self.fallback_models) or "none"))
        if self.system_prompt is not None:
            prompt = self.system_prompt if len(self.system_prompt) <= 200 else self.system_prompt[:199] + "…"
            lines.append(f"system prompt “{prompt}”")
        return lines


def channel_of(conversation: ConversationKey) -> ConversationKey:
    """The channel a conversation is in (a thread's channel): personas are per channel."""
    return dataclasses.replace(conversation, thread=None)


class PersonaStore:
    """Channel personas of every bot, one Redis hash per bot and channel (no expiry: an admin's
    setting stays until unset)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, circuit: RedisCircuit | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._circuit = circuit or RedisCircuit()

    def _key(self, bot: str, channel: ConversationKey) -> str:
        return self._keys.persona(bot, channel.platform, channel.workspace, channel.channel)

    async def get(self, bot: str, channel: ConversationKey) -> Persona | None:
        """The channel's persona; None when it has none or Redis cannot say (logged)."""
        if self._circuit.is_open:
            return None
        try:
            raw = await self._redis.hgetall(self._key(bot, channel))
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("persona.degraded", op="get", error=type(exc).__name__)
            return None
        self._circuit.record_success()
        data = {_text(k): _text(v) for k, v in raw.items()}
        fallbacks: tuple[str, ...] | None = None
        if "fallbacks" in data:
            try:
                parsed = json.loads(data["fallbacks"])
                fallbacks = tuple(str(m) for m in parsed) if isinstance(parsed, list) else None
            except ValueError:
                fallbacks = None
        persona = Persona(model=data.get("model") or None, fallback_models=fallbacks,
                          system_prompt=data.get("prompt"))
        return None if persona.empty else persona

    async def set(self, bot: str, channel: ConversationKey, field: str, value: str) -> None:
        """Store one field ("model", "fallbacks" as a JSON list, "prompt")."""
        await self._write(bot, channel, lambda key: self._redis.hset(key, field, value))

    async def unset(self, bot: str, channel: ConversationKey, fields: Sequence[str]) -> None:
        await self._write(bot, channel, lambda key: self._redis.hdel(key, *fields))

    async def _write(
        self, bot: str, channel: ConversationKey, op: Callable[[str], Awaitable[object]]
    ) -> None:
        try:
            await op(self._key(bot, channel))
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            raise PersonaUnavailable(type(exc).__name__) from exc
        self._circuit.record_success()


class PersonaCommands:
    """The persona command of one bot, as text in, one short reply out (`/lunos` on Slack takes
    the text as typed; Discord's `/persona` options are turned into the same words)."""

    def __init__(self, profile: BotProfile, store: PersonaStore) -> None:
        self._profile = profile
        self._store = store

    async def run(self, conversation: ConversationKey, text: str, *, admin: bool) -> str:
        """Answer one command in the channel of `conversation`. Only `show` and `help` are open
        to everyone; a change needs `admin` (the adapter decides)."""
        words = text.split()
        verb = words[0].lower() if words else "show"
        channel = channel_of(conversation)
        if verb == "show":
            return await self.show(channel)
        if verb not in ("set", "unset"):
            return f"Persona commands for this channel:\n{USAGE}"
        if not admin:
            return "Only an admin can change this channel's persona (`show` is open to everyone)."
        try:
            if verb == "unset":
                return await self._unset(channel, [w.lower() for w in words[1:]])
            return await self._set(channel, words[1].lower() if len(words) > 1 else "",
                                   text.split(None, 2)[2] if len(words) > 2 else "")
        except PersonaUnavailable:
            return "Sorry — my settings store is unavailable, so nothing changed. Try again soon."

    async def show(self, conversation: ConversationKey) -> str:
        persona = await self._store.get(self._profile.name, channel_of(conversation))
        if persona is None:
            return f"This channel uses my own settings (model `{self._profile.model}`)."
        return "In this channel I answer with " + "; ".join(persona.describe()) + "."

    async def _set(self, channel: ConversationKey, field: str, value: str) -> str:
        bot = self._profile.name
        allowed = self._profile.allowed_models
        if field == "model":
            model = value.strip()
            if not model:
                return "Say which model: `set model <model>`."
            if model not in allowed:
                return f"`{model}` is not allowed for this bot. Allowed: {_listed(allowed)}."
            await self._store.set(bot, channel, "model", model)
            return f"Done — in this channel I now answer with `{model}`."
        if field == "fallbacks":
            models = [m.strip() for m in value.replace(",", " ").split() if m.strip()]
            if [m.lower() for m in models] == ["none"]:
                models = []
            elif not models:
                return "Say which models: `set fallbacks <model> [<model>…]`, or `set fallbacks none`."
            refused = [m for m in models if m not in allowed]
            if refused:
                return f"`{refused[0]}` is not allowed for this bot. Allowed: {_listed(allowed)}."
            if len(set(models)) != len(models):
                return "Name each fallback model once."
            await self._store.set(bot, channel, "fallbacks", json.dumps(models))
            return "Done — fallbacks in this channel: " + (_listed(models) if models else "none") + "."
        if field == "prompt":
            prompt = value.strip()
            if not prompt:
                return "Say the prompt: `set prompt <text>`."
            if len(prompt) > MAX_PROMPT_CHARS:
                return f"That prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}."
            await self._store.set(bot, channel, "prompt", prompt)
            return "Done — this channel has its own system prompt now."
        return f"Set what? `model`, `fallbacks` or `prompt`:\n{USAGE}"

    async def _unset(self, channel: ConversationKey, names: list[str]) -> str:
        if not names or names == ["all"]:
            await self._store.unset(self._profile.name, channel, FIELDS)
            return "Done — this channel uses my own settings again."
        unknown = [n for n in names if n not in FIELDS]
        if unknown:
            return f"Unset what? `model`, `fallbacks`, `prompt` or `all` (not `{unknown[0]}`)."
        await self._store.unset(self._profile.name, channel, names)
        return "Done — back to my own " + " and ".join(names) + " here."


def _listed(models: Sequence[str]) -> str:
    return ", ".join(f"`{m}`" for m in models)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
