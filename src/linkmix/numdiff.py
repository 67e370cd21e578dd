"""Finite differences: the one rule every numerical derivative in linkmix follows.

The step of coordinate k is ``h_k = rel_step · max(1, |x_k|)`` (``step``).  First
derivatives are central, (f(x + h) − f(x − h)) / 2h; where x_k − h would cross a lower
bound, the second-order forward formula (−3f(x) + 4f(x + h) − f(x + 2h)) / 2h instead.
Second derivatives are central too: (f₊ − 2f₀ + f₋)/h² on the diagonal and
(f₊₊ + f₋₋ − f₊₀ − f₋₀ − f₀₊ − f₀₋ + 2f₀)/(2h_ih_j) off it, over the coordinates
away from their bounds (at a bound, (f(x + 2h) − 2f(x + h) + f(x))/h² for a curvature
alone).  Everything is second order in h, except ``richardson_hessian`` and
``richardson_jacobian`` (fourth).

``jacobian`` and ``hessian`` differentiate a function of a vector; ``rowwise_jacobian``
differentiates a function applied to each row of an array at once (a model function
over observations).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["step", "jacobian", "hessian", "richardson_hessian", "richardson_jacobian",
           "central_jacobian", "curvatures", "rowwise_jacobian"]


def step(value: float, rel_step: float) -> float:
    """The step for a coordinate at ``value``: rel_step · max(1, |value|)."""
    return rel_step * max(1.0, abs(value))


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
        h = step(x[k], rel_step)
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


def hessian(fun, x, *, lower=None, rel_step: float = 1e-4, f0: float | None = None):
    """Gradient and Hessian of a scalar function from one set of d(d + 1) evaluations.

    Returns
    -------
    gradient : ndarray (d,)
        Central differences; at a bound, the second-order forward difference.
    hessian : ndarray (i, i)
        Over the ``interior`` coordinates only (those whose backward step stays
        within the bound).
    interior : ndarray of int
    steps : list of float
        The step h_k of every coordinate.
    """
    x = np.asarray(x, dtype=float)
    d = len(x)
    f0 = float(fun(x)) if f0 is None else f0
    # plain floats and lists: d is a handful, and numpy's per-call cost would dominate
    xs = x.tolist()
    lo = [-math.inf] * d if lower is None else np.asarray(lower, dtype=float).tolist()
    h = [step(v, rel_step) for v in xs]
    inside = [xs[k] - h[k] >= lo[k] for k in range(d)]

    def at(*moves):
        z = x.copy()
        for k, sign in moves:
            z[k] += sign * h[k]
        return float(fun(z))

    grad = [0.0] * d
    up, down = [math.nan] * d, [math.nan] * d
    for k in range(d):
        up[k] = at((k, 1))
        if inside[k]:
            down[k] = at((k, -1))
            grad[k] = (up[k] - down[k]) / (2 * h[k])
        else:
            grad[k] = (-3 * f0 + 4 * up[k] - at((k, 2))) / (2 * h[k])
    interior = [k for k in range(d) if inside[k]]
    H = np.empty((len(interior), len(interior)))
    for a, i in enumerate(interior):
        H[a, a] = (up[i] - 2 * f0 + down[i]) / h[i] ** 2
        for b, j in enumerate(interior[:a]):
            value = (at((i, 1), (j, 1)) + at((i, -1), (j, -1)) - up[i] - down[i] - up[j]
                     - down[j] + 2 * f0) / (2 * h[i] * h[j])
            H[a, b] = H[b, a] = value
    return np.array(grad), H, np.array(interior, dtype=int), h


def richardson_hessian(fun, x, *, rel_step: float = 2e-3) -> np.ndarray:
    """The Hessian of a smooth function with no bounds, accurate to fourth order in h:
    (4H(h/2) − H(h))/3 from ``hessian``'s central differences at steps h and h/2 (one
    step of Richardson's extrapolation, as R's numDeriv takes several).

    Twice ``hessian``'s evaluations buy a step twenty times larger at the same
    truncation error, so rounding in ``fun`` matters some 400 times less: where the
    Hessian itself is the result (a covariance), not a convergence check.
    """
    coarse = hessian(fun, x, rel_step=rel_step)[1]
    fine = hessian(fun, x, rel_step=rel_step / 2)[1]
    return (4.0 * fine - coarse) / 3.0


def richardson_jacobian(values_at, x, *, rel_step: float = 1e-4, lower=None,
                        indices=None) -> np.ndarray:
    """The Jacobian of a function (columns: the coordinates ``indices``, default all),
    accurate to fourth order in h: (4J(h/2) − J(h))/3 from ``jacobian``'s differences at
    steps h and h/2 (central; where x_k − h would cross ``lower``, the second-order
    forward formula, whose error is O(h²) as well).  ``values_at`` maps a list of points
    to their function values: the whole stencil goes in one call, so that the caller may
    spread it over threads."""
    return _stencil_jacobian(values_at, x, rel_step, lower, indices, richardson=True)


def central_jacobian(values_at, x, *, rel_step: float = 1e-4, indices=None) -> np.ndarray:
    """``jacobian``'s central differences (no bounds) with the whole stencil of 2d
    points evaluated by one call of ``values_at`` (points → values), as
    ``richardson_jacobian``."""
    return _stencil_jacobian(values_at, x, rel_step, None, indices, richardson=False)


def _stencil_jacobian(values_at, x, rel_step, lower, indices, richardson: bool):
    x = np.asarray(x, dtype=float)
    lower = np.full(len(x), -np.inf) if lower is None else np.asarray(lower, dtype=float)
    indices = list(range(len(x)) if indices is None else indices)
    steps = [step(x[k], rel_step) for k in indices]
    inside = [x[k] - h >= lower[k] for k, h in zip(indices, steps)]
    points = [x] if not all(inside) else []
    for k, h, central in zip(indices, steps, inside):
        offsets = (h, -h) if central else (h, 2 * h)
        if richardson:
            offsets += (h / 2, -h / 2) if central else (h / 2,)
        for offset in offsets:
            point = x.copy()
            point[k] += offset
            points.append(point)
    values = [np.atleast_1d(np.asarray(v, dtype=float)) for v in values_at(points)]
    f0 = values.pop(0) if not all(inside) else None
    columns, at = [], 0
    for k, h in enumerate(steps):
        if inside[k]:
            up, down = values[at:at + 2]
            coarse = (up - down) / (2 * h)
            fine = (values[at + 2] - values[at + 3]) / h if richardson else None
            at += 4 if richardson else 2
        else:
            up, up2 = values[at:at + 2]
            coarse = (-3 * f0 + 4 * up - up2) / (2 * h)
            fine = (-3 * f0 + 4 * values[at + 2] - up) / h if richardson else None
            at += 3 if richardson else 2
        columns.append((4.0 * fine - coarse) / 3.0 if richardson else coarse)
    return np.column_stack(columns) if columns else np.zeros((0, 0))


def curvatures(fun, x, *, lower=None, rel_step: float = 1e-4, f0: float | None = None,
               indices=None) -> np.ndarray:
    """∂²fun/∂x_k² for each k in ``indices`` (default: all), two evaluations each."""
    x = np.asarray(x, dtype=float)
    indices = range(len(x)) if indices is None else indices
    lower = np.full(len(x), -np.inf) if lower is None else np.asarray(lower, dtype=float)
    f0 = float(fun(x)) if f0 is None else f0
    out = np.empty(len(indices))
    for i, k in enumerate(indices):
        h = step(x[k], rel_step)
        up = x.copy()
        up[k] += h
        other = x.copy()
        if x[k] - h >= lower[k]:
            other[k] -= h
            out[i] = (float(fun(up)) - 2 * f0 + float(fun(other))) / h**2
        else:
            other[k] += 2 * h
            out[i] = (float(fun(other)) - 2 * float(fun(up)) + f0) / h**2
    return out


def rowwise_jacobian(fun, X, *, rel_step: float = 1e-6, indices=None) -> np.ndarray:
    """∂fun(X)_i/∂X_i per row i, where row i of ``fun(X)`` (n × m) depends only on row i
    of ``X`` (n × s): central differences of all rows at once, shape (n, m, s), or
    (n, m, len(indices)) for the columns ``indices`` of X only."""
    X = np.asarray(X, dtype=float)
    columns = []
    for j in (range(X.shape[1]) if indices is None else indices):
        h = rel_step * np.maximum(1.0, np.abs(X[:, j]))
        up, down = X.copy(), X.copy()
        up[:, j] += h
        down[:, j] -= h
        diff = np.asarray(fun(up), float) - np.asarray(fun(down), float)
        columns.append(diff / (2 * h.reshape((-1,) + (1,) * (diff.ndim - 1))))
    return np.stack(columns, axis=-1)
