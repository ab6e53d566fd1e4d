"""Who may talk to a Discord bot, and where: allow/deny lists for users, roles and channels.

Pure values and decisions, no I/O: the bot builds a `Place` and a `Sender` from a message or an
interaction (`adapters.discord.translate`) and asks `AccessPolicy.check`. A channel id in a list
matches the channel itself, every thread in it and, when it is a category, every channel in that
category (and their threads), because moderators think in channels and categories, not threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

REFUSED_USER = "Sorry — I'm not set up to answer you."
REFUSED_CHANNEL = "Sorry — I don't answer in this channel."
REFUSED_DM = "Sorry — I don't answer direct messages. Mention me in a server channel instead."


class Refusal(Enum):
    """Why a message is refused; the value is the short text the user is shown (once)."""

    USER = REFUSED_USER
    CHANNEL = REFUSED_CHANNEL
    DM = REFUSED_DM


@dataclass(frozen=True)
class Place:
    """Where a message was sent. `guild_id` is None in DMs; `parent_id` is set for threads."""

    guild_id: int | None
    channel_id: int
    parent_id: int | None = None
    category_id: int | None = None
    is_thread: bool = False

    @property
    def is_dm(self) -> bool:
        return self.guild_id is None

    @property
    def enclosing(self) -> tuple[int, ...]:
        """The channel, then the channel a thread is in, then the category: what a list entry matches."""
        return tuple(i for i in (self.channel_id, self.parent_id, self.category_id) if i is not None)


@dataclass(frozen=True)
class Sender:
    """Who sent a message. `role_ids` is empty in DMs (there are no roles outside a guild)."""

    user_id: int
    display_name: str
    role_ids: frozenset[int] = frozenset()
    is_bot: bool = False


def in_channels(place: Place, channels: frozenset[int]) -> bool:
    """Whether `place` is one of `channels`, a thread in one, or in one of them as a category."""
    return any(i in channels for i in place.enclosing)


@dataclass(frozen=True)
class AccessPolicy:
    """Deny lists win over allow lists. An empty allow list allows everyone (or everywhere).

    Users and roles are one "who" check: a non-empty `allowed_users` or `allowed_roles` admits a
    sender listed in either. In DMs there are no roles, so a sender admitted only by role is refused
    there; channel lists do not apply to DMs (`allow_dms` does).
    """

    allowed_users: frozenset[int] = field(default_factory=frozenset)
    denied_users: frozenset[int] = field(default_factory=frozenset)
    allowed_roles: frozenset[int] = field(default_factory=frozenset)
    denied_roles: frozenset[int] = field(default_factory=frozenset)
    allowed_channels: frozenset[int] = field(default_factory=frozenset)
    denied_channels: frozenset[int] = field(default_factory=frozenset)
    allow_dms: bool = True

    def check(self, sender: Sender, place: Place) -> Refusal | None:
        """None when the sender may talk to the bot here, else why not."""
        if sender.user_id in self.denied_users or sender.role_ids & self.denied_roles:
            return Refusal.USER
        if (self.allowed_users or self.allowed_roles) and not (
            sender.user_id in self.allowed_users or sender.role_ids & self.allowed_roles
        ):
            return Refusal.USER
        if place.is_dm:
            return None if self.allow_dms else Refusal.DM
        if in_channels(place, self.denied_channels):
            return Refusal.CHANNEL
        if self.allowed_channels and not in_channels(place, self.allowed_channels):
            return Refusal.CHANNEL
        return None
