"""Mean ± sample standard deviation over seeds, as the results tables print it.

Shared by the research summarisers (``from research.seed_stats import mean_std``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(x: Sequence[float], fmt: str = ".4f") -> str:
    """``"mean ± std"`` with the sample std (ddof 1; 0 for a single value)."""
    a = np.asarray(x, dtype=np.float64)
    sd = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():{fmt}} ± {sd:{fmt}}"
