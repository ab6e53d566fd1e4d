"""The Discord adapter: discord.py in, `core` values and `ReplySink` calls out.

`translate` (pure: discord.py objects → core values), `access` (allow/deny lists), `pacing` (edits
per channel, 429 awareness), `sink` (posting and editing answers), `bot` (`DiscordBot`, the runtime),
`config` (`DiscordConfig`). Imports `core` and discord.py only, never `bots`.
"""

from adapters.discord.bot import DiscordBot
from adapters.discord.config import DiscordConfig, FooterSettings
from core.ports import MessageObserver  # re-exported: what DiscordBot's `observer` must satisfy

__all__ = ["DiscordBot", "DiscordConfig", "FooterSettings", "MessageObserver"]
