"""The platforms this process can run, one registration line each.

Everything else in `bots/` (the definition loader, `Settings`, `check`, the runner) reads `PLATFORMS`
and names no platform. Adding a platform: a package under `adapters/` that defines its
`core.platform.PlatformSpec`, and one line here (docs/architecture.md, "How to add a platform").
"""

from __future__ import annotations

from adapters.console import CONSOLE
from adapters.discord.platform import DISCORD
from adapters.slack.platform import SLACK
from core.platform import PlatformRegistry

PLATFORMS = PlatformRegistry()
PLATFORMS.register(SLACK)
PLATFORMS.register(DISCORD)
PLATFORMS.register(CONSOLE)
