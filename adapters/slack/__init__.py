"""The Slack adapter: Slack events in (Bolt, Socket Mode or HTTP), replies out through the engine.

`translate` (payloads → core values, pure), `middleware` (events a bot ignores), `pacing` (per-workspace
budgets), `retry` (slack-sdk's 429 retry, telling those budgets), `sink` (`SlackReplySink`), `names`
(display names), `bot` (`SlackBot`, the runtime).
Imports `core` and Slack's libraries, never `bots`.
"""

from __future__ import annotations

from adapters.slack.bot import SlackBot, SlackBotConfig
from adapters.slack.pacing import EditPacing
from adapters.slack.sink import SlackReplySink

__all__ = ["EditPacing", "SlackBot", "SlackBotConfig", "SlackReplySink"]
