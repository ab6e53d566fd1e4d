"""Platform adapters: translate platform events into `core` types and replies into platform calls.

Each adapter imports `core` and its one platform library, never `bots`.
"""
