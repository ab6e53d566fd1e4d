"""Every Redis key lunos-bots writes, built in one place.

One prefix (`lb` by default; tests use their own) and a hash tag around the conversation key, so a
conversation's history and lock share one Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.types import ConversationKey

DEFAULT_PREFIX = "lb"


@dataclass(frozen=True)
class RedisKeys:
    """Key names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    # Each bot has its own memory of a conversation: two bots in one channel never share turns.
    def history(self, bot: str, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{bot}|{key}}}:history"

    def reset_marker(self, bot: str, key: ConversationKey) -> str:
        """Set by `reset`, so a forgotten conversation is not re-seeded (e.g. from a Slack thread)."""
        return f"{self.prefix}:{{{bot}|{key}}}:reset"

    def lock(self, bot: str, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{bot}|{key}}}:lock"

    def event(self, bot: str, event_id: str) -> str:
        return f"{self.prefix}:event:{bot}:{event_id}"

    def usage(self, app_id: str, day: str) -> str:
        return f"{self.prefix}:usage:{app_id}:{day}"

    def usage_pattern(self) -> str:
        return f"{self.prefix}:usage:*"

    def parse_usage(self, key: str) -> tuple[str, str] | None:
        """(app_id, day) from a usage key, or None if it is not one."""
        head = f"{self.prefix}:usage:"
        if not key.startswith(head):
            return None
        app_id, _, day = key[len(head):].rpartition(":")
        return (app_id, day) if app_id and day else None

    # One hash tag per user of a bot: the limits script (`core.limits`) touches both keys at once.
    def user_turns_in_flight(self, bot: str, user: str) -> str:
        """A user's turns in progress with `bot` (`TurnLimiter`), a sorted set turn → lease expiry."""
        return f"{self.prefix}:limits:{{{bot}|{user}}}:in_flight"

    def user_turns_started(self, bot: str, user: str) -> str:
        """A user's turns started with `bot` in the rate window, a sorted set turn → start time."""
        return f"{self.prefix}:limits:{{{bot}|{user}}}:started"

    def bucket(self, name: str) -> str:
        return f"{self.prefix}:bucket:{{{name}}}"

    def bucket_holders(self, name: str) -> str:
        """Who holds a claim on bucket `name`'s tokens (`RateBudget.admit`); same slot as the bucket."""
        return f"{self.prefix}:bucket:{{{name}}}:holders"

    # The reply journal: every key in one Cluster slot, so the claim script reads them together.
    def journal_entry(self, entry_id: str) -> str:
        return f"{self.prefix}:{{journal}}:reply:{entry_id}"

    def journal_due(self) -> str:
        return f"{self.prefix}:{{journal}}:due"

    def message_conversation(self, bot: str, ref: str) -> str:
        """Which conversation a platform message (`ref`, platform-qualified) belongs to."""
        return f"{self.prefix}:msgconv:{bot}:{ref}"

    # Feedback (`core.feedback`): which answer a message holds, and who voted on it.
    def feedback_answer(self, bot: str, channel: str, ref: str) -> str:
        return f"{self.prefix}:feedback:{bot}:{channel}:{ref}:answer"

    def feedback_voters(self, bot: str, channel: str, ref: str) -> str:
        return f"{self.prefix}:feedback:{bot}:{channel}:{ref}:voters"

    def persona(self, bot: str, platform: str, workspace: str, channel: str) -> str:
        """A channel's own model, fallbacks or system prompt (`core.personas`), a hash."""
        return f"{self.prefix}:persona:{bot}:{platform}:{workspace}:{channel}"
