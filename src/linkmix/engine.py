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

Two engines: ``BlockedEngine`` (block-diagonal first term, then the Schur complement
of the rest by a supernodal Cholesky: one dense LAPACK block while the later terms
have few levels, or laid out sparsely by ``linkmix.schur``) and ``CholmodEngine``
(general sparse, CHOLMOD analysed once, refactored in place).  ``make_engine("auto")``
times the candidates whose estimated cost is close and keeps the fastest.
The blocked engine's buffers are bound once to a compiled ``_pls.BlockedSystem``
(``engine.system``), which a nonlinear model's compiled PNLS refills and refactors
directly.  A small model also gets the dense kernel of exact second derivatives
(``dense_curvature``, ``_dense.DenseCurvature``), which fits it without an engine.
"""

from __future__ import annotations

import copy
import itertools
import math
import threading
import time

import numpy as np
import scipy.sparse as sp

from . import _dense, _pls, _symbolic, schur
from .errors import ArgumentError
from .linalg import solve_triangular
from .threads import SMALL_PROBLEM, TINY_PROBLEM, one_blas_thread

__all__ = ["BlockedEngine", "CholmodEngine", "make_engine", "cheapest_engine", "ENGINES",
           "dense_curvature"]


class _EngineBase:
    def __init__(self, design):
        self.design = design
        self.tmpl, self.tmpl_off, self.term_k, _ = design.theta_template()
        self.p = design.p
        self.logdet_L = np.nan
        self.theta = None  # the θ of the current factor; None once the values change

    @property
    def prefers_one_thread(self) -> bool:
        """Whether the model is too small for BLAS threads to pay: n(p + 1) plus the
        numbers in the Schur complement's panels at most ``SMALL_PROBLEM``."""
        return self._size() <= SMALL_PROBLEM

    @property
    def limits_blas_threads(self) -> bool:
        """Whether a fit runs with BLAS limited to one thread: a small model
        (``prefers_one_thread``) that is not tiny (above ``TINY_PROBLEM``), whose BLAS
        calls OpenBLAS would run on one thread anyway while setting and lifting the
        limit costs about 20 μs, a tenth of such a fit."""
        return TINY_PROBLEM < self._size() <= SMALL_PROBLEM

    def _size(self) -> int:
        design = self.design
        return design.n * (design.p + 1) + getattr(self, "schur_size", 0)

    def _factored(self, theta) -> bool:
        """Whether the current factor is already the one at ``theta`` (the optimiser's
        last point is evaluated again by the fit's report, the report's pieces one
        after another)."""
        # bytes, not np.array_equal: this runs on every evaluation, and costs 10 times less
        return self.theta is not None and self.theta.tobytes() == theta.tobytes()

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
    """Block-diagonal first term, Schur complement of the rest factored by supernodes.

    ``ordering="dense"`` keeps the Schur complement S whole (one dense panel, LAPACK);
    a fill-reducing ordering ("amd", "metis", "colamd") lays S out sparsely
    (``linkmix.schur``).  The symbolic work (orders, patterns, positions) is done
    here, once.
    """

    def __init__(self, design, ordering: str = "dense"):
        super().__init__(design)
        terms = design.terms
        first, rest = terms[0], terms[1:]
        n, p = design.n, design.p
        self.q1 = first.q
        self.q2 = sum(t.q for t in rest)
        q2 = self.q2
        m = q2 + p + 1
        self.m = m

        # W = [Z2 X y]: the later terms' slots of each observation (row of S, value),
        # and [X y] dense.  Nothing per observation is p-squared: memory is O(n·m).
        offsets = list(itertools.accumulate((t.q for t in rest), initial=0))
        k2 = sum(t.k for t in rest)
        z_rows = np.empty((n, k2), dtype=np.int64)  # the terms' order
        z_vals = np.empty((n, k2))
        col = 0
        for t, term in enumerate(rest):
            z_rows[:, col:col + term.k] = offsets[t] + term.codes[:, None] * term.k + np.arange(term.k)
            z_vals[:, col:col + term.k] = term.Z
            col += term.k
        self._xy = np.empty((n, p + 1))
        self._xy[:, :p] = design.X
        self._xy[:, p] = design.y

        # each random effect's block (its level's first row) and term, terms' order
        blk_first = np.zeros(q2, dtype=np.int64)
        blk_term = np.zeros(q2, dtype=np.int32)
        for t, term in enumerate(rest):
            r = np.arange(term.q)
            blk_first[offsets[t] + r] = offsets[t] + (r // term.k) * term.k
            blk_term[offsets[t] + r] = t + 1

        k1, nlev = first.k, first.n_levels
        self.k1, self.nlev = k1, nlev
        self._codes1 = codes = first.codes.astype(np.int64)
        self._first_Z = np.array(first.Z, dtype=float, order="C")

        layout = (schur.dense_layout(q2, p) if ordering == "dense" or q2 == 0 else
                  schur.sparse_layout(schur.level_incidence(codes, z_rows, nlev, q2),
                                      blk_first, p, ordering))
        self.layout = layout
        self.ordering = layout.ordering
        # OpenBLAS's threaded dsyrk (inside dpotrf too) crashes on large orders
        # (OpenMathLib/OpenBLAS#1413, #2821; here dpotrf of 16,669 and dsyrk of 16,669 ×
        # 2,048 on two threads, not 12,000 or 16,669 × 256): such panels run on one.
        self._one_thread = int(np.max(np.diff(layout.super_rows_ptr))) > THREADED_PANEL_LIMIT
        self.kind = "blocked" if layout.ordering == "dense" else "blocked-sparse"
        perm = layout.perm
        inverse = layout.inverse
        z_cols = inverse[z_rows].astype(np.int64) if q2 else z_rows  # rows of S
        self._z_cols, self._z_vals = z_cols, z_vals
        row_term = np.zeros(m, dtype=np.int32)
        row_blk_off = np.zeros(m, dtype=np.int32)
        row_term[:q2] = blk_term[perm]
        row_blk_off[:q2] = np.arange(q2) - (perm - blk_first[perm])
        self.row_blk_off, self.row_term = row_blk_off, row_term

        # Pattern of C = W'Z1 by level of term 1, rows of S sorted within a level: the
        # later terms' rows the level meets, then all p + 1 rows of [X y].
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

        # where each observation's slot pairs (lower triangle) and [X y]'s rows sit in
        # S's panels
        pair_c, pair_d = (a.astype(np.int32) for a in np.tril_indices(k2))
        hi = np.maximum(z_cols[:, pair_c], z_cols[:, pair_d])
        lo = np.minimum(z_cols[:, pair_c], z_cols[:, pair_d])
        self._pairs = (pair_c, pair_d)
        self._g_pos = np.ascontiguousarray(
            layout.positions(hi.ravel(), lo.ravel()).reshape(hi.shape))
        self._xy_pos = layout.xy_positions(p)
        self._g_entries = self._nonzero_blocks(hi.ravel(), lo.ravel(), row_blk_off)

        # The sums and the factor, allocated once: every refill and refactorisation
        # writes into these, so the compiled system stays bound to them.
        self.D1 = np.zeros((nlev, k1, k1))
        self.c_vals = np.zeros((self._nnz_c, k1))
        self.Gp = np.zeros(layout.size)
        self.L11 = np.zeros((nlev, k1, k1))
        self.L21 = np.zeros((self._nnz_c, k1))
        self.Sp = np.zeros(layout.size)
        self._G_xy = self._xy_block(self.Gp)
        self.Lxy = self._xy_block(self.Sp)
        self.system = self._make_system()
        self._work = None
        self._fill_values()

    def _make_system(self):
        """The compiled system over this engine's arrays (bound to them from here on)."""
        layout = self.layout
        return _pls.BlockedSystem(
            self.tmpl, self.tmpl_off, self.term_k, self._codes1, self._first_Z, self._z_cols,
            self._z_vals, self._c_pos, self._xy, self._xy_first, self.D1, self.c_indptr,
            self.c_rows, self.c_vals, self.row_blk_off, self.row_term, self.q2,
            layout.perm.astype(np.int32), layout.super_first, layout.super_rows_ptr,
            layout.super_rows, layout.panel_off, layout.snode_of, self._xy_pos, *self._pairs,
            self._g_pos, self._g_entries, self.Gp, self.L11, self.L21, self.Sp)

    def twin(self) -> "BlockedEngine":
        """An engine with this one's data, sums and layout, which factorisations read and
        never write, shared, and a factor of its own: evaluations on another thread.
        Valid while this engine's values stay (``set_response``/``set_Z`` would leave it
        behind); the factor's arrays cost about one ``schur_size`` more."""
        other = copy.copy(self)
        other.theta = None
        other.L11, other.L21, other.Sp = (np.zeros_like(a) for a in (self.L11, self.L21,
                                                                      self.Sp))
        other.Lxy = other._xy_block(other.Sp)
        other.system = other._make_system()
        return other

    def _nonzero_blocks(self, hi, lo, row_blk_off):
        """(supernode, local column, row index) of every block of S's panels where G can
        be non-zero, each block by its first row and column: the blocks the observations'
        slot pairs (rows hi ≥ lo) fall in, and X's rows under every later-term block."""
        layout, q2, p, m = self.layout, self.q2, self.p, self.m
        starts = np.flatnonzero(row_blk_off[:q2] == np.arange(q2))
        keys = np.concatenate([row_blk_off[hi].astype(np.int64) * m + row_blk_off[lo],
                               ((q2 + np.arange(p))[:, None] * m + starts).ravel()])
        keys = np.unique(keys)
        rows, cols = keys // m, keys % m
        J = layout.snode_of[cols]
        nr = np.diff(layout.super_rows_ptr)[J]
        local = cols - layout.super_first[J]
        index = layout.positions(rows, cols) - layout.panel_off[J] - local * nr
        return tuple(np.ascontiguousarray(a, dtype=np.int32) for a in (J, local, index))

    def evaluation_work(self) -> float:
        """Estimated multiply-adds of one factorisation (its θ-dependent work); fixed by
        the pattern, so computed once."""
        if self._work is None:
            self._work = self.layout.flops + self.first_term_work()
        return self._work

    def first_term_work(self) -> float:
        """Multiply-adds of the first term's fill, Σ_j k1·(rows of level j)² / 2."""
        rows = np.diff(self.c_indptr).astype(float)
        return float(self.k1 * np.sum(rows * rows) / 2)

    @property
    def schur_size(self) -> int:
        """Numbers in the Schur complement's panels (m² when dense)."""
        return self.layout.size

    def _xy_block(self, values) -> np.ndarray:
        """The (p+1) × (p+1) block of [X y]'s rows and columns in S's panels, as a view
        of ``values`` (column-major, rows q2 … m − 1)."""
        q2, w = self.q2, self.p + 1
        J = self.layout.snode_of[q2]
        nr = int(self.layout.super_rows_ptr[J + 1] - self.layout.super_rows_ptr[J])
        start = int(self._xy_pos[q2])
        block = values[start:start + (w - 1) * nr + w]
        return np.lib.stride_tricks.as_strided(block, shape=(w, w),
                                               strides=(block.itemsize, nr * block.itemsize))

    def _fill_values(self, refresh_response: bool = True):
        """The numbers that depend on Z and y, not on θ (compiled, one pass):
        D1[j] = Σ_{i∈j} z_i z_i', C = W'Z1 by level of term 1, and G = W'W (its [X y]
        block by BLAS), refilled in place.  y's entries are recomputed as
        ``set_response`` computes them unless the caller sets a new response next
        (``refresh_response=False``)."""
        self.theta = None
        self.system.products(False)
        self._G_xy[:] = self._xy.T @ self._xy
        # y's row as set_response computes it, so that a model refitted with another
        # response is bit for bit the model built with it
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
        q2, p = self.q2, self.p
        self.theta = None
        self._xy[:, p] = y
        g = np.empty(self.m)  # W'y, rows of S
        g[q2:] = self._xy.T @ y
        self.system.response_products(y, g[:q2])
        self.Gp[self._xy_pos + p] = g

    def update(self, theta) -> bool:
        theta = np.array(theta, dtype=float)  # a copy: callers may reuse their buffer
        if not self._factored(theta):
            self.logdet_L, self.info, self._logdet_x = self._blas(self.system.factor, theta)
            self.theta = theta
        # info == m: y lies in the span (r² = 0); anything else is a failure.
        return self.info == 0

    def logdet_RX(self) -> float:
        """log|R_X|², summed by the compiled factorisation."""
        return self._logdet_x

    supports_gradient = True

    def prss_gradient(self) -> np.ndarray:
        """∂r²/∂θ_i at β̂ from the current factor and values (compiled; see
        ``BlockedSystem.prss_gradient``)."""
        beta = self.beta_hat() if self.p else np.zeros(1)
        return self.system.prss_gradient(np.ascontiguousarray(beta, dtype=float))

    def xvx_gradient(self) -> np.ndarray:
        """∂(X'V₀⁻¹X)/∂θ_i, shape (n_theta, p, p), at the current factor and values
        (V₀ = I + ZΛΛ'Z').

        X_a'V₀⁻¹X_a is the penalised residual sum of squares of the response X_a without
        fixed effects, so by the envelope theorem (as ``prss_gradient``), with
        U = A⁻¹Λ'Z'X (column a: that response's modes) and E = X − ZΛU, it is
        −(S_i + S_i') with S_i = E'Z D_i U = R'D_i U, R = Z'E, D_i = ∂Λ/∂θ_i: over the
        entries (a, b) of a term's T that are θ_i, R's rows of coefficient a times U's
        of coefficient b, level by level."""
        p, q = self.p, self.q1 + self.q2
        U = np.empty((q, p))
        R = np.empty((q, p))
        self.system.column_residuals(U, R)
        S = np.zeros((int(np.max(self.tmpl, initial=-1)) + 1, p, p))
        for t, rows in enumerate(self._coefficient_rows()):
            k = len(rows)
            for a in range(k):
                for b in range(k):
                    index = self.tmpl[self.tmpl_off[t] + a * k + b]
                    if index >= 0:
                        S[index] += R[rows[a]].T @ U[rows[b]]
        return -(S + S.transpose(0, 2, 1))

    def _coefficient_rows(self) -> list:
        """Per term, per coefficient a, the rows of u (the factor's order) of that
        coefficient at every level."""
        q2, k1 = self.q2, self.k1
        out = [[np.arange(a, self.q1, k1) for a in range(k1)]]
        coefficient = np.arange(q2) - self.row_blk_off[:q2]
        for t in range(1, len(self.term_k)):
            mine = self.row_term[:q2] == t
            out.append([self.q1 + np.flatnonzero(mine & (coefficient == a))
                        for a in range(int(self.term_k[t]))])
        return out

    def logdet_gradient(self, REML: bool = False) -> np.ndarray:
        """∂/∂θ_i of log|L|² (``REML``: of log|L|² + log|R_X|²) at the current factor,
        exactly: tr(Ã⁻¹∂Ã/∂θ_i) from the selected inverse (compiled; about twice the
        work of the factorisation)."""
        return self._blas(self.system.trace_gradient, self.q2 + (self.p if REML else 0))

    def _blas(self, method, *args):
        """``method(*args)``, with BLAS on one thread where a panel is too large for
        OpenBLAS's threads (``THREADED_PANEL_LIMIT``)."""
        if self._one_thread:
            with one_blas_thread():
                return method(*args)
        return method(*args)

    def solve(self, b) -> np.ndarray:
        """(Λ'Z'ZΛ + I)⁻¹b (b: q or q × k) through the blocked factor (compiled)."""
        out = np.array(b, dtype=float, order="F")
        for column in out.reshape(len(out), -1, order="F").T:  # contiguous views of out
            self.system.solve(column)
        return out

    def conditional_modes(self, beta) -> np.ndarray:
        """ũ(θ, β) by back-substitution through the blocked factor (compiled)."""
        beta = np.ascontiguousarray(beta, dtype=float)
        if beta.size == 0:
            beta = np.zeros(1)  # a valid buffer; p = 0 reads none of it
        u = np.empty(self.q1 + self.q2)
        self.system.modes(beta, u)
        return u


class CholmodEngine(_EngineBase):
    """General sparse engine: CHOLMOD factors Λ'Z'ZΛ + I.

    The pattern of Λ'Z' (q × n, CSC) is fixed; ``analyze_AAt`` runs once and
    each θ rewrites the values in place and calls ``cholesky_AAt_inplace``.
    Simplicial METIS is the default: on InstEval it factors in 55 ms against
    95–160 ms for supernodal or AMD orderings (SuiteSparse 5.12, whose supernodal
    kernels call the system's BLAS).  The analysis runs on a thread with a 64 MB
    stack: SuiteSparse 5.12's supernodal analysis was seen to overflow the default
    8 MB on InstEval (a segfault, not an exception).
    """

    def __init__(self, design, mode: str = "simplicial", ordering_method: str = "metis"):
        super().__init__(design)
        self.kind = "cholmod" if mode == "simplicial" else f"cholmod-{mode}"
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
            self.factor = _on_large_stack(analyze_AAt, self.At, mode=mode,
                                          ordering_method=ordering_method)
        except CholmodError:  # a SuiteSparse built without METIS: CHOLMOD's own choice
            self.factor = _on_large_stack(analyze_AAt, self.At, mode=mode)
        self.Lxy = np.zeros((self.p + 1, self.p + 1))

    def evaluation_work(self) -> float:
        """Σ_j c_j² over the columns of L (c_j its entries) in CHOLMOD's order, from the
        pattern of Z'Z (symbolic: the elimination tree's column counts)."""
        P = self.factor.P()
        pattern = (self.At @ self.At.T).tocsc()[P][:, P].tocsc()
        pattern.sort_indices()
        indptr, indices = pattern.indptr.astype(np.int32), pattern.indices.astype(np.int32)
        parent = _symbolic.elimination_tree(indptr, indices)
        counts = _symbolic.column_counts(indptr, indices, parent).astype(float) + 1.0
        return float(np.sum(counts * counts))

    def set_response(self, y) -> None:
        """Replace y (e.g. y − f(Π) for a linked mean)."""
        self.theta = None
        self.XY[:, -1] = y
        self.XYtXY = self.XY.T @ self.XY

    supports_curvature = False  # CHOLMOD factors AA' + I: no indefinite corrections
    supports_gradient = False

    def set_Z(self, Zs, response=None) -> None:
        """Replace every term's covariate values (n × k each), and y with ``response``;
        the pattern is unchanged."""
        self.theta = None
        self.Zcat[:] = np.hstack(Zs)
        if response is not None:
            self.set_response(response)

    def update(self, theta) -> bool:
        theta = np.array(theta, dtype=float)  # a copy: callers may reuse their buffer
        if self._factored(theta):
            return self._positive_definite
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
            self._positive_definite = False
        else:
            self._positive_definite = True
        return self._positive_definite

    def solve(self, b) -> np.ndarray:
        """(Λ'Z'ZΛ + I)⁻¹b (b: q or q × k) by CHOLMOD."""
        return self.factor.solve_A(np.asarray(b, dtype=float))

    def conditional_modes(self, beta) -> np.ndarray:
        resid = self.XY[:, -1] - self.XY[:, :-1] @ np.asarray(beta, dtype=float)
        return self.factor.solve_A(self.At @ resid)


#: Panels with more rows than this are factored with BLAS on one thread.
THREADED_PANEL_LIMIT = 8192
#: What ``make_engine`` takes.
ENGINES = ("auto", "blocked", "blocked-sparse", "cholmod", "cholmod-supernodal")
#: A dense Schur complement whose factorisation takes under this much work (Σ_j c_j²,
#: about m³/3: m ≈ 150, a tenth of a millisecond) is used as it is: no other layout
#: could repay its own symbolic analysis.
MEASURE_ABOVE = 1e6
#: Layouts whose estimated work is within this factor of the least are timed against
#: each other; beyond it the estimate decides.
MEASURE_WITHIN = 4.0
#: The dense Schur complement is not tried when its two m × m panels exceed this (bytes).
DENSE_MEMORY = 2 ** 31
#: CHOLMOD (the whole system, any order) is tried when the blocked layout's work exceeds
#: this: then eliminating the first term level by level may not be the best order.
CHOLMOD_ABOVE = 1e9
#: CHOLMOD's simplicial factorisation works column by column without BLAS: its
#: multiply-adds count this many times a supernodal one's (measured on simulated
#: crossed designs of 1e5 ratings: 1.2 s against 0.15 s for the same work).
SIMPLICIAL_COST = 4.0


def _on_large_stack(function, *args, stack_mb: int = 64, **kwargs):
    """function(*args, **kwargs) on a thread with a ``stack_mb`` stack; its result, or
    its exception raised here."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001  (re-raised in the caller's thread)
            outcome["error"] = error

    previous = threading.stack_size(stack_mb << 20)
    try:
        worker = threading.Thread(target=run)
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def make_engine(design, kind: str = "auto"):
    """The factorisation for ``design``.

    ``"blocked"``: first term level by level, dense Schur complement of the rest;
    ``"blocked-sparse"``: the same with the Schur complement in a fill-reducing order
    (AMD) and supernodes; ``"cholmod"``, ``"cholmod-supernodal"``: CHOLMOD on the whole
    system (METIS order); ``"auto"``: the cheapest of these by ``cheapest_engine``.
    """
    if kind == "auto":
        return cheapest_engine(design)
    if kind == "blocked":
        return BlockedEngine(design)
    if kind == "blocked-sparse":
        return BlockedEngine(design, ordering="amd")
    if kind == "cholmod":
        return CholmodEngine(design)
    if kind == "cholmod-supernodal":
        return CholmodEngine(design, mode="supernodal")
    raise ArgumentError(f"engine must be one of {ENGINES}, not {kind!r}")


def cheapest_engine(design):
    """The engine that factors ``design`` fastest, chosen by measured cost.

    The work of one factorisation is estimated from each layout's structure (Σ_j c_j²
    over the factor's columns, plus the first term's fill, which every blocked layout
    shares; CHOLMOD's from its order's column counts, looked at only when the blocked
    work exceeds ``CHOLMOD_ABOVE``); layouts within ``MEASURE_WITHIN`` of the least are
    each timed on one factorisation at the start θ (after one to warm the buffers;
    cheapest estimate first, and a layout whose first run is 1.5 times the best so far
    is not run again), and the fastest is kept.  Small problems (``MEASURE_ABOVE``)
    take the dense Schur complement without looking further.  The chosen layout is
    ``engine.kind``/``engine.ordering``.
    """
    q2 = sum(t.q for t in design.terms[1:])
    m = q2 + design.p + 1
    dense_work = schur.dense_work(m)
    if q2 == 0 or dense_work <= MEASURE_ABOVE:
        return BlockedEngine(design)
    sparse = BlockedEngine(design, ordering="amd")
    fill = sparse.first_term_work()
    estimates = [(sparse.layout.flops + fill, lambda: sparse)]
    if 16.0 * m * m <= DENSE_MEMORY:
        estimates.append((dense_work + fill, lambda: BlockedEngine(design)))
    if sparse.layout.flops > CHOLMOD_ABOVE:
        cholmod = CholmodEngine(design)  # its analysis is small next to such a fit
        estimates.append((SIMPLICIAL_COST * cholmod.evaluation_work(), lambda: cholmod))
    estimates.sort(key=lambda item: item[0])
    least = estimates[0][0]
    if len(estimates) == 1 or estimates[1][0] > MEASURE_WITHIN * least:
        return estimates[0][1]()  # nothing close enough to time against
    theta = design.theta_start()
    best, best_seconds = None, math.inf
    for work, make in estimates:
        if work > MEASURE_WITHIN * least:
            break
        engine = make()
        seconds = _factor_seconds(engine, theta, best_seconds)
        if seconds < best_seconds:
            best, best_seconds = engine, seconds
    return best


def _factor_seconds(engine, theta, beat: float = math.inf) -> float:
    """Seconds of a factorisation at θ: the second of two (the first pays for touching
    fresh buffers), unless the first already took over 1.5 × ``beat``.  Each is made
    anew: the engine would otherwise keep its factor at the same θ."""
    start = time.perf_counter()
    engine.update(theta)
    seconds = time.perf_counter() - start
    if seconds > 1.5 * beat:
        return seconds
    engine.theta = None
    start = time.perf_counter()
    engine.update(theta)
    return time.perf_counter() - start


#: Multiply-adds an evaluation's Python costs, in the units of ``evaluation_work``
#: (about 15 μs of calls around a small factorisation): what a differenced Hessian
#: pays per point besides the kernels.
EVALUATION_OVERHEAD = 5e4
#: Largest q + p for which the exact curvature is kept dense (its inverse holds
#: (q + p)² numbers).
DENSE_CURVATURE_SIZE = 1000


def dense_curvature(design, REML: bool, always: bool = False):
    """The exact second derivatives' kernel of ``design`` (``_dense.DenseCurvature``),
    or None where it would cost more than differencing an engine's exact gradient
    (unless ``always``).

    Its work at θ is about (q + p)³ (the inverse of Ã) plus 2q²(q + p) (T and Y);
    a differenced Hessian takes 2d gradient evaluations, each at least
    ``EVALUATION_OVERHEAD`` (more where the factorisation is large, which the rule
    leaves out so that it needs no engine: a model it admits needs none).
    """
    q, p, d = design.q, design.p, design.n_theta
    size = q + p
    work = size**3 + 2.0 * q * q * size
    if d == 0 or not always and (size > DENSE_CURVATURE_SIZE
                                 or work > 2 * d * EVALUATION_OVERHEAD):
        return None
    rows, cols, ptr, offset = [], [], [0], 0
    for term in design.terms:
        starts = offset + np.arange(term.n_levels, dtype=np.int32) * term.k
        for a, b in term.theta_positions():
            rows.append(starts + a)
            cols.append(starts + b)
            ptr.append(ptr[-1] + term.n_levels)
        offset += term.q
    kernel = _dense.DenseCurvature(*dense_Z(design), design.X, q, np.concatenate(rows),
                                   np.concatenate(cols), np.array(ptr, dtype=np.int32), REML)
    kernel.set_response(np.ascontiguousarray(design.y, dtype=float))
    return kernel


def dense_Z(design):
    """Z as the dense kernel reads it: per observation the columns of u it touches
    (n × Σk, int32) and Z's values there."""
    columns, values, offset = [], [], 0
    for term in design.terms:
        base = term.codes.astype(np.int32) * term.k + offset
        columns += [base + a for a in range(term.k)]
        values += [term.Z[:, a] for a in range(term.k)]
        offset += term.q
    return (np.ascontiguousarray(np.column_stack(columns), dtype=np.int32),
            np.ascontiguousarray(np.column_stack(values), dtype=float))
