"""Small dense linear algebra on the hot paths, as direct LAPACK/BLAS calls.

Owns the scaled QR factorisation that every design's rank check and every working
parametrisation start from, triangular solves, and a vector's RMS and largest
magnitude without overflow.  numpy's and scipy's wrappers
validate and convert their arguments on every call (10–60 μs against a few μs of
arithmetic for the p × p systems of a peptide's fit, called several times per fit),
so the compiled kernels call LAPACK and BLAS directly on float arrays the caller
guarantees finite.
"""

from __future__ import annotations

import numpy as np

from ._pls import magnitudes, pow2_column_scales, scaled_qr, triangular_solve

__all__ = ["solve_triangular", "scaled_qr", "pow2_column_scales", "magnitudes"]

# magnitudes, pow2_column_scales and scaled_qr are the compiled kernels themselves (see their
# docstrings); solve_triangular adds the checks and shapes a caller expects.


def solve_triangular(A: np.ndarray, b: np.ndarray, *, lower: bool, trans: bool = False
                     ) -> np.ndarray:
    """x with A x = b (A' x = b when ``trans``), A triangular and non-singular.

    Raises ``numpy.linalg.LinAlgError`` where A has a zero on its diagonal.
    """
    x = np.array(b, dtype=float, order="F", ndmin=1)
    if not x.size:
        return x
    zero = triangular_solve(A, x.reshape(len(x), -1, order="F"), lower, trans)
    if zero:
        raise np.linalg.LinAlgError(f"triangular system is singular (zero at diagonal entry "
                                    f"{zero})")
    return x
