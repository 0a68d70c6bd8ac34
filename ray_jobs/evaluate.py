"""Deprecated name of ``ray_jobs.score`` (``spoofdet score``), kept for this release.

``python -m ray_jobs.evaluate ...`` still runs the job; use ``python -m ray_jobs.score``.
"""

from __future__ import annotations

from ray_jobs.score import *  # noqa: F403
from ray_jobs.score import __all__, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
