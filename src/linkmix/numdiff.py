"""Finite differences: the one rule every numerical derivative in linkmix follows.

Central differences with step ``h = rel_step · max(1, |x_k|)``; where ``x_k − h``
would cross a lower bound, the second-order forward formula
``(−3f(x) + 4f(x + h) − f(x + 2h)) / 2h`` instead.
"""

from __future__ import annotations

import numpy as np

__all__ = ["jacobian"]


def jacobian(fun, x, *, lower=None, rel_step: float = 1e-6, indices=None, f0=None) -> np.ndarray:
    """∂fun/∂x_k for each k in ``indices`` (default: all), as the columns of an array.

    Parameters
    ----------
    fun : callable
        Maps x to a scalar or a 1-d array (m values).
    x : array_like
    lower : array_like, optional
        Lower bounds not to step across (``-inf`` where there is none).
    rel_step : float
    indices : sequence of int, optional
    f0 : scalar or array, optional
        ``fun(x)`` if already known (used only at bounds).

    Returns
    -------
    ndarray, shape (m, len(indices))
    """
    x = np.asarray(x, dtype=float)
    indices = range(len(x)) if indices is None else indices
    lower = np.full(len(x), -np.inf) if lower is None else np.asarray(lower, dtype=float)
    columns = []
    for k in indices:
        h = rel_step * max(1.0, abs(x[k]))
        up = x.copy()
        up[k] += h
        if x[k] - h >= lower[k]:
            down = x.copy()
            down[k] -= h
            columns.append((np.asarray(fun(up), float) - np.asarray(fun(down), float)) / (2 * h))
        else:
            if f0 is None:
                f0 = fun(x)
            up2 = x.copy()
            up2[k] += 2 * h
            columns.append((-3 * np.asarray(f0, float) + 4 * np.asarray(fun(up), float)
                            - np.asarray(fun(up2), float)) / (2 * h))
    if not columns:
        return np.zeros((np.size(fun(x)) if f0 is None else np.size(f0), 0))
    return np.column_stack([np.atleast_1d(c) for c in columns])
