"""`stop_task`: ending a background task this process started (a sweeper, a typing loop, a
replayer) and waiting until it has, so nothing of it runs after its owner stopped.

Platform-neutral; used by core, adapters and the composition root alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if it is still running) and wait for it to end. Its cancellation stays
    inside; any other exception it ended with is the task's own business (already logged)."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
