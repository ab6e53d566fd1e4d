"""The composition root: settings from the environment, bot definitions, logging, the runner and
the `lunos-bots` CLI. The only package that reads `os.environ` and wires adapters to the core.

The `*.toml` files beside this module are the bot definitions (`--bots` points elsewhere).
"""
