"""Small dense triangular solves on the hot paths, as direct LAPACK calls.

Owns one function: scipy's ``solve_triangular`` validates and converts its
arguments on every call (about 20× the cost of the solve itself for the p × p
systems of a peptide's fit, called several times per fit); here LAPACK's
``dtrtrs`` is called directly on float arrays the caller guarantees finite.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dtrtrs

__all__ = ["solve_triangular"]


def solve_triangular(A: np.ndarray, b: np.ndarray, *, lower: bool, trans: bool = False
                     ) -> np.ndarray:
    """x with A x = b (A' x = b when ``trans``), A triangular and non-singular.

    Raises ``numpy.linalg.LinAlgError`` where A has a zero on its diagonal.
    """
    x, info = dtrtrs(A, np.asarray(b, dtype=float), lower=int(lower), trans=int(trans))
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular system is singular (LAPACK dtrtrs info {info})")
    return x
