"""How many threads the BLAS and OpenMP pools under linkmix may use.

Owns one policy: a group's or a small model's matrices are too small for threads
to pay (each BLAS call then waits on hand-offs, and processes of a pool oversubscribe
the cores), so that work runs with the pools limited to one thread; large dense
blocks keep the default.  The controller is made on first use, once the BLAS of
numpy and scipy are loaded, and reused: a limit then costs microseconds.  Also how
many threads a fit's independent evaluations may run on (``evaluation_workers``).
"""

from __future__ import annotations

import contextlib
import functools
import os

__all__ = ["one_blas_thread", "evaluation_workers", "SMALL_PROBLEM", "TINY_PROBLEM"]

#: Largest n·(p+1) + (numbers in the Schur complement's panels) of a fit run with one
#: thread.
SMALL_PROBLEM = 2_000_000
#: Largest such size of a fit that sets no limit: its matrix products and
#: factorisations (of order at most ~45) stay below OpenBLAS's thresholds for starting
#: threads (a product of m·n·k under 262,144, a Cholesky factor of order under 128).
TINY_PROBLEM = 2_000


@functools.lru_cache(maxsize=1)
def _controller():
    import scipy.linalg  # noqa: F401  (its BLAS must be loaded to be controlled)
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


_limited = [False]  # inside a one-thread block already: nested blocks need not limit again


@contextlib.contextmanager
def one_blas_thread(enabled: bool = True):
    """Run the block with every BLAS/OpenMP pool limited to one thread (if ``enabled``).

    Nested blocks (a batch chunk's fits) cost nothing: the outer limit holds.
    """
    if not enabled or _limited[0]:
        yield
        return
    _limited[0] = True
    try:
        with _controller().limit(limits=1):
            yield
    finally:
        _limited[0] = False


def evaluation_workers() -> int:
    """Threads a fit may give to independent evaluations (its convergence checks'
    stencil): 2 where the process may run on two cores and no outer block (a batch's
    groups, a sampler) has limited the pools, which says the caller spends the cores
    itself; else 1.  Two, not more: each thread needs a factor of its own."""
    if _limited[0]:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1
