"""Factorisation engines: θ → the Cholesky factor of the augmented PLS system.

Owns the layout of Λ'Z'ZΛ + I and its cross-products with ``[X y]``.  Every
engine offers one interface, so a better factorisation can replace another:

``update(theta)``
    refactor at θ; returns ``False`` when the system is not positive definite.
``logdet_L``
    log|L_θ|² = log det(Λ'Z'ZΛ + I).
``Lxy``
    lower Cholesky factor, (p+1) × (p+1), of the Schur complement of
    ``[X y]'[X y]`` in the augmented system: its leading p×p block is R_Xᵀ, its
    last row ``(l', r)`` gives β̂ (``R_X β̂ = l``) and the penalised residual
    sum of squares ``r² = r·r``.
``conditional_modes(beta)``
    ũ = argmin_u ‖y − Xβ − ZΛu‖² + ‖u‖².
``solve(b)``, ``marginal_gram(V, B)``
    (Λ'Z'ZΛ + I)⁻¹b, and V'V₀⁻¹V, from the current factor; the response is left as
    it is.
``set_response(y)``, ``set_Z(Zs[, response=y])``
    replace the numbers of y or of the terms' covariates, keeping the pattern.

Two engines: ``BlockedEngine`` (block-diagonal first term, dense LAPACK Schur
complement of the rest; fastest while the later terms have few levels) and
``CholmodEngine`` (general sparse, CHOLMOD analysed once, refactored in place).
The blocked engine's buffers are bound once to a compiled ``_pls.BlockedSystem``
(``engine.system``), which a nonlinear model's compiled PNLS refills and refactors
directly.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from . import _pls
from .errors import ArgumentError
from .linalg import solve_triangular

__all__ = ["BlockedEngine", "CholmodEngine", "make_engine", "DENSE_SCHUR_LIMIT"]

#: Largest dense Schur complement (later terms' random effects + p + 1) the
#: automatic choice hands to ``BlockedEngine``.
DENSE_SCHUR_LIMIT = 2500


class _EngineBase:
    def __init__(self, design):
        self.design = design
        self.tmpl, self.tmpl_off, self.term_k, _ = design.theta_template()
        self.p = design.p
        self.logdet_L = np.nan
        self.theta = None

    def beta_hat(self) -> np.ndarray:
        """β̂(θ) from the current factor."""
        p = self.p
        if p == 0:
            return np.zeros(0)
        return solve_triangular(self.Lxy[:p, :p], self.Lxy[p, :p], lower=True, trans=True)

    def prss(self, beta=None) -> float:
        """r²(θ, β) = min_u ‖y − Xβ − ZΛu‖² + ‖u‖² (β = β̂ when omitted)."""
        r2 = self.Lxy[self.p, self.p] ** 2
        if beta is None or self.p == 0:
            return r2
        p = self.p
        delta = self.Lxy[:p, :p].T @ np.asarray(beta, dtype=float) - self.Lxy[p, :p]
        return r2 + float(delta @ delta)

    def logdet_RX(self) -> float:
        """log|R_X|²."""
        return 2.0 * float(np.sum(np.log(np.diagonal(self.Lxy)[: self.p])))

    def marginal_gram(self, V, B) -> np.ndarray:
        """V'V₀⁻¹V = V'V − B'(Λ'Z'ZΛ + I)⁻¹B for columns V (n × m) and B = Λ'Z'V, from the
        current factor (V₀ = I + ZΛΛ'Z'); the response is left as it is.  The precision
        of β̂ per σ⁻² for a fixed-effects design V."""
        out = V.T @ V - B.T @ self.solve(B)
        return 0.5 * (out + out.T)


class BlockedEngine(_EngineBase):
    """Block-diagonal first term, dense Schur complement for the rest.

    The symbolic work (cross-product patterns, ``W'W``) is done here, once.
    """

    kind = "blocked"

    def __init__(self, design):
        super().__init__(design)
        terms = design.terms
        first, rest = terms[0], terms[1:]
        n, p = design.n, design.p
        self.q1 = first.q
        self.q2 = sum(t.q for t in rest)
        q2 = self.q2
        m = q2 + p + 1
        self.m = m

        # W = [Z2 X y]: the later terms' slots of each observation (column of W, value),
        # and [X y] dense.  Nothing per observation is p-squared: memory is O(n·m).
        offsets = list(itertools.accumulate((t.q for t in rest), initial=0))
        k2 = sum(t.k for t in rest)
        z_cols = np.empty((n, k2), dtype=np.int64)
        z_vals = np.empty((n, k2))
        col = 0
        for t, term in enumerate(rest):
            z_cols[:, col:col + term.k] = offsets[t] + term.codes[:, None] * term.k + np.arange(term.k)
            z_vals[:, col:col + term.k] = term.Z
            col += term.k
        self._z_cols, self._z_vals = z_cols, z_vals
        self._xy = np.empty((n, p + 1))
        self._xy[:, :p] = design.X
        self._xy[:, p] = design.y

        # row → (block offset, term) for rows of later terms
        row_blk_off = np.zeros(m, dtype=np.int32)
        row_term = np.zeros(m, dtype=np.int32)
        for t, term in enumerate(rest):
            r = np.arange(term.q)
            row_blk_off[offsets[t] + r] = offsets[t] + (r // term.k) * term.k
            row_term[offsets[t] + r] = t + 1
        self.row_blk_off, self.row_term = row_blk_off, row_term

        k1, nlev = first.k, first.n_levels
        self.k1, self.nlev = k1, nlev
        self._codes1 = codes = first.codes.astype(np.int64)
        self._first_Z = np.array(first.Z, dtype=float, order="C")

        # Pattern of C = W'Z1 by level of term 1, rows sorted within a level: the later
        # terms' rows the level meets, then all p + 1 rows of [X y].
        if k2:
            keys = (codes[:, None] * m + z_cols).ravel()
            ukeys, pos = np.unique(keys, return_inverse=True)
            key_level = ukeys // m
            z_count = np.bincount(key_level, minlength=nlev)
        else:
            z_count = np.zeros(nlev, dtype=np.int64)
        self.c_indptr = np.zeros(nlev + 1, dtype=np.int32)
        self.c_indptr[1:] = np.cumsum(z_count + p + 1)
        self._xy_first = (self.c_indptr[:-1] + z_count).astype(np.int64)  # level's [X y] rows
        self._nnz_c = int(self.c_indptr[-1])
        self.c_rows = np.empty(self._nnz_c, dtype=np.int32)
        if k2:
            z_first = np.cumsum(z_count) - z_count  # each level's first key in ukeys
            key_pos = self.c_indptr[key_level] + np.arange(len(ukeys)) - z_first[key_level]
            self._c_pos = key_pos[pos].reshape(n, k2)  # (observation, slot) → entry of C
            self.c_rows[key_pos] = ukeys % m
        else:
            self._c_pos = np.empty((n, 0), dtype=np.int64)
        self.c_rows[self._xy_first[:, None] + np.arange(p + 1)] = q2 + np.arange(p + 1)

        # The sums and the factor, allocated once: every refill and refactorisation
        # writes into these, so the compiled system stays bound to them.
        self.D1 = np.zeros((nlev, k1, k1))
        self.c_vals = np.zeros((self._nnz_c, k1))
        self.G = np.zeros((m, m), order="F")
        self.L11 = np.zeros((nlev, k1, k1))
        self.L21 = np.zeros((self._nnz_c, k1))
        self.S = np.zeros((m, m), order="F")
        self.Lxy = self.S[q2:, q2:]
        self.system = _pls.BlockedSystem(
            self.tmpl, self.tmpl_off, self.term_k, self._codes1, self._first_Z, self._z_cols,
            self._z_vals, self._c_pos, self._xy, self._xy_first, self.D1, self.c_indptr,
            self.c_rows, self.c_vals, self.G, self.row_blk_off, self.row_term, q2, self.L11,
            self.L21, self.S)
        self._fill_values()

    def _fill_values(self, refresh_response: bool = True):
        """The numbers that depend on Z and y, not on θ (compiled, one pass):
        D1[j] = Σ_{i∈j} z_i z_i', C = W'Z1 by level of term 1, and G = W'W (dense;
        its [X y] block by BLAS), refilled in place.  y's entries are recomputed as
        ``set_response`` computes them unless the caller sets a new response next
        (``refresh_response=False``)."""
        self.system.products(False)
        q2 = self.q2
        self.G[q2:, q2:] = self._xy.T @ self._xy
        # y's row and column as set_response computes them, so that a model refitted
        # with another response is bit for bit the model built with it
        if refresh_response:
            self.set_response(self._xy[:, self.p].copy())

    supports_curvature = True

    def set_Z(self, Zs, response=None) -> None:
        """Replace every term's covariate values (n × k each; nonlinear models' ∂μ/∂φ),
        and with ``response`` y at the same time, as ``set_response`` would next.  The
        pattern (levels, terms) is unchanged.  (PNLS's Newton terms go straight to
        ``self.system``, see ``_pnls.pyx``.)
        """
        self._first_Z[:] = Zs[0]
        col = 0
        for Z in Zs[1:]:
            self._z_vals[:, col:col + Z.shape[1]] = Z
            col += Z.shape[1]
        self._fill_values(refresh_response=response is None)
        if response is not None:
            self.set_response(response)

    def set_response(self, y) -> None:
        """Replace y (e.g. y − f(Π) for a linked mean); the pattern is unchanged.

        Rewrites y's entries of C and G: Σ_{i∈j} y_i z1_i', W'y."""
        y = np.ascontiguousarray(y, dtype=float)
        q2, p, col = self.q2, self.p, self.m - 1
        self._xy[:, p] = y
        g = np.empty(self.m)  # W'y
        g[q2:] = self._xy.T @ y
        _pls.blocked_response_products(self._codes1, self._first_Z, self._z_cols, self._z_vals,
                                       y, self._xy_first, p, self.c_vals, g[:q2])
        self.G[col, :] = g
        self.G[:, col] = g

    def update(self, theta) -> bool:
        theta = np.ascontiguousarray(theta, dtype=float)
        self.logdet_L, self.info, self._logdet_x = self.system.factor(theta)
        self.theta = theta
        # info == m: y lies in the span (r² = 0); anything else is a failure.
        return self.info == 0

    def logdet_RX(self) -> float:
        """log|R_X|², summed by the compiled factorisation."""
        return self._logdet_x

    def solve(self, b) -> np.ndarray:
        """(Λ'Z'ZΛ + I)⁻¹b (b: q or q × k) through the blocked factor (compiled)."""
        out = np.array(b, dtype=float, order="F")
        for column in out.reshape(len(out), -1, order="F").T:  # contiguous views of out
            _pls.blocked_solve(self.L11, self.L21, self.S, self.c_indptr, self.c_rows, self.q2,
                               column)
        return out

    def conditional_modes(self, beta) -> np.ndarray:
        """ũ(θ, β) by back-substitution through the blocked factor (compiled)."""
        beta = np.ascontiguousarray(beta, dtype=float)
        if beta.size == 0:
            beta = np.zeros(1)  # a valid buffer; p = 0 reads none of it
        return _pls.blocked_modes(self.L11, self.L21, self.S, self.c_indptr, self.c_rows,
                                  self.q2, self.p, beta, np.empty(self.q1 + self.q2))


class CholmodEngine(_EngineBase):
    """General sparse engine: CHOLMOD factors Λ'Z'ZΛ + I.

    The pattern of Λ'Z' (q × n, CSC) is fixed; ``analyze_AAt`` runs once and
    each θ rewrites the values in place and calls ``cholesky_AAt_inplace``.
    Simplicial METIS is the default: on InstEval it factors in 55 ms against
    95–160 ms for supernodal or AMD orderings (SuiteSparse 5.12).
    """

    kind = "cholmod"

    def __init__(self, design, mode: str = "simplicial", ordering_method: str = "metis"):
        super().__init__(design)
        from sksparse.cholmod import CholmodError, analyze_AAt  # imported on first use: slow

        n, terms = design.n, design.terms
        self.Zcat = np.ascontiguousarray(np.hstack([t.Z for t in terms]))
        width = self.Zcat.shape[1]
        offsets = np.cumsum([0] + [t.q for t in terms])
        rows = np.hstack([offsets[t] + term.codes[:, None] * term.k + np.arange(term.k)
                          for t, term in enumerate(terms)]).astype(np.int32)
        indptr = (np.arange(n + 1) * width).astype(np.int32)
        self.At = sp.csc_matrix((np.ones(n * width), rows.ravel(), indptr),
                                shape=(design.q, n))
        self.At.has_sorted_indices = True
        self.XY = np.column_stack([design.X, design.y])
        self.XYtXY = self.XY.T @ self.XY
        _pls.lambdat_zt_values(design.theta_start(), self.tmpl, self.tmpl_off, self.term_k,
                               self.Zcat, self.At.data)
        try:
            self.factor = analyze_AAt(self.At, mode=mode, ordering_method=ordering_method)
        except CholmodError:  # a SuiteSparse built without METIS: CHOLMOD's own choice
            self.factor = analyze_AAt(self.At, mode=mode)
        self.Lxy = np.zeros((self.p + 1, self.p + 1))

    def set_response(self, y) -> None:
        """Replace y (e.g. y − f(Π) for a linked mean)."""
        self.XY[:, -1] = y
        self.XYtXY = self.XY.T @ self.XY

    supports_curvature = False  # CHOLMOD factors AA' + I: no indefinite corrections

    def set_Z(self, Zs, response=None) -> None:
        """Replace every term's covariate values (n × k each), and y with ``response``;
        the pattern is unchanged."""
        self.Zcat[:] = np.hstack(Zs)
        if response is not None:
            self.set_response(response)

    def update(self, theta) -> bool:
        theta = np.ascontiguousarray(theta, dtype=float)
        _pls.lambdat_zt_values(theta, self.tmpl, self.tmpl_off, self.term_k, self.Zcat,
                               self.At.data)
        self.factor.cholesky_AAt_inplace(self.At, beta=1.0)
        self.theta = theta
        self.logdet_L = self.factor.logdet()
        AtXY = self.At @ self.XY
        schur = self.XYtXY - AtXY.T @ self.factor.solve_A(AtXY)
        try:
            self.Lxy[:] = np.linalg.cholesky(schur)
        except np.linalg.LinAlgError:
            return False
        return True

    def solve(self, b) -> np.ndarray:
        """(Λ'Z'ZΛ + I)⁻¹b (b: q or q × k) by CHOLMOD."""
        return self.factor.solve_A(np.asarray(b, dtype=float))

    def conditional_modes(self, beta) -> np.ndarray:
        resid = self.XY[:, -1] - self.XY[:, :-1] @ np.asarray(beta, dtype=float)
        return self.factor.solve_A(self.At @ resid)


def make_engine(design, kind: str = "auto"):
    """Choose the factorisation for ``design``.

    ``"auto"`` takes ``BlockedEngine`` when the dense Schur complement of the
    later terms has at most ``DENSE_SCHUR_LIMIT`` rows, else ``CholmodEngine``.
    """
    if kind == "auto":
        later = sum(t.q for t in design.terms[1:])
        kind = "blocked" if later + design.p + 1 <= DENSE_SCHUR_LIMIT else "cholmod"
    if kind == "blocked":
        return BlockedEngine(design)
    if kind == "cholmod":
        return CholmodEngine(design)
    raise ArgumentError(f"engine must be 'auto', 'blocked' or 'cholmod', not {kind!r}")
