"""What every entry point (train, sweep, evaluate, recommend, export) does around its work."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_guarded(
    work: Callable[[], object],
    user_errors: tuple[type[BaseException], ...],
    prefix: str = "",
    suffix: str = "",
) -> int:
    """Run ``work``; a user error prints one line ``error: <prefix><message><suffix>`` and gives exit code
    2 (no traceback); the process group is torn down whatever happens.

    ``work`` must hold the session in its own frame, so that the last reference to the process
    group is gone before ``destroy_distributed`` runs (see its docstring).
    """
    from distrec.distributed.env import destroy_distributed

    try:
        work()
    except user_errors as e:
        print(f"error: {prefix}{e}{suffix}", file=sys.stderr)
        return 2
    finally:
        destroy_distributed()
    return 0
