"""Process helpers shared by the run journal's lock and the lab's "already running" check.

Both ask the same question of a pid read from a file (is its writer still alive?), and both
need the same two corner cases right, so the answer lives here once.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists. EPERM means it exists but is not ours; pid 0 and
    below are never a writer's pid (`os.kill(0, 0)` would ask about our own process group)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
