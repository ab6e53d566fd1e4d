"""`DiscordConfig`: one Discord bot's settings as the adapter needs them, with named defaults.

Built and validated from the `[discord]` table by `adapters.discord.platform`; tests build it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.discord.access import AccessPolicy

DISCORD_MAX_MESSAGE_CHARS = 2000  # Discord rejects longer content (400/50035)
# Split well below the limit: the renderer needs room to close and reopen a code fence and to show
# the streaming indicator, and a final note (footer) should fit in the last part.
DISCORD_SPLIT_CHARS = 1900
DISCORD_MIN_EDIT_INTERVAL_S = 1.2  # ~5 edits/5 s per channel (undocumented); shared by every reply there
# discord.py waits this long after the last GUILD_CREATE before on_ready; its own default.
DISCORD_GUILD_READY_TIMEOUT_S = 2.0
DISCORD_TYPING_REFRESH_S = 8.0  # one trigger shows "typing…" for ~10 s; refresh before it lapses
# At shutdown replies in flight get this long to finish on their own; the rest of the stop budget
# (`adapters.discord.bot.STOP_BUDGET_S`) goes to finalising the ones cut short, then disconnecting.
DISCORD_STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class FooterSettings:
    """What the small footer under a finished answer may say. The model name is off by default:
    most communities do not care, and it changes whenever an admin changes the model."""

    show_model: bool = False
    show_fallback: bool = True
    show_trimmed: bool = True


@dataclass(frozen=True)
class DiscordConfig:
    """Everything a `DiscordBot` needs besides its engine and stores."""

    token: str = field(repr=False)  # never in a log line or a traceback's locals
    guild_ids: tuple[int, ...] = ()  # slash commands synced to these guilds (instantly); else globally
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # Channels (with their threads; categories with their channels) where every message is answered,
    # mention or not. Needs the privileged message-content intent, requested only when this is set.
    respond_to_all: frozenset[int] = field(default_factory=frozenset)
    # Channels (categories with their channels) that are one conversation: every mention continues
    # the channel's history, each turn attributed by name. Answers only mentions and replies, so no
    # privileged intent. Threads are one conversation each wherever they are.
    channel_memory: frozenset[int] = field(default_factory=frozenset)
    footer: FooterSettings = field(default_factory=FooterSettings)
    shard_count: int | None = None  # set: an AutoShardedClient with this many shards in total
    shard_ids: tuple[int, ...] | None = None  # the shards this process runs (None: all of them)
    edit_interval_s: float = DISCORD_MIN_EDIT_INTERVAL_S
    # Not in the `[discord]` table: discord.py's and Discord's timings, tunable so tests run fast.
    guild_ready_timeout_s: float = DISCORD_GUILD_READY_TIMEOUT_S
    typing_refresh_s: float = DISCORD_TYPING_REFRESH_S
    stop_grace_s: float = DISCORD_STOP_GRACE_S

    @property
    def sharded(self) -> bool:
        return self.shard_count is not None

    @property
    def syncs_commands(self) -> bool:
        """Only the process running shard 0 (or the only process) registers slash commands, so N
        processes of one sharded bot do not all overwrite the same commands at start."""
        return self.shard_ids is None or 0 in self.shard_ids
