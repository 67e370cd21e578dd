"""Small dense triangular solves on the hot paths, as direct LAPACK calls.

Owns one function: scipy's ``solve_triangular`` (and its f2py ``dtrtrs``) validate
and convert their arguments on every call, 10–25 μs against under 1 μs for the
p × p systems of a peptide's fit, called several times per fit; here BLAS's
``dtrsm`` is called from the compiled kernels on float arrays the caller guarantees
finite, reading A in place (a block of a larger factor included).
"""

from __future__ import annotations

import numpy as np

from ._pls import triangular_solve

__all__ = ["solve_triangular"]


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
