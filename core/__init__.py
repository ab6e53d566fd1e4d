"""The platform-neutral heart of lunos-bots: conversation engine, chat client, history, renderer.

Nothing in this package knows Slack, Discord or the process environment; `bots/` builds the
settings and `adapters/` translate platform events into the types defined here.
"""
