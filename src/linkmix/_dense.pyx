# cython: language_level=3
"""Compiled exact second derivatives of a small linear mixed model's criterion.

Owns arithmetic only: for a model small enough to hold the augmented system
``Ã = W'W + diag(I_q, 0)`` (W = [ZΛ_θ, X]) and its inverse densely, one call at θ
gives log|A| (A = Λ'Z'ZΛ + I), log|R_X|², r², β̂ and ũ, and on request their exact
first and second derivatives in θ and the derivative of M = (X'V₀⁻¹X)⁻¹: what a
small model's fit by Newton's method, its convergence checks and Satterthwaite's
degrees of freedom are made of, and (over Z alone, β in the response) the sampler's
exact deviance gradient.  ``linkmix.model`` gives the numbers meaning;
``linkmix.engine`` builds the kernel (``dense_curvature``) and owns the sparse
factorisations of larger models.

Λ = Σ_i θ_i D_i is linear in θ; D_i has a 1 at each entry (r, c) of Λ that is θ_i.
With S = Ã⁻¹, R = W'Z and P_u the u-rows, ∂Ã/∂θ_i = R D_i P_u + (R D_i P_u)' and
∂²Ã/∂θ_i∂θ_j = P_u'(D_i'Z'ZD_j + D_j'Z'ZD_i)P_u, so with T = (SR)_u and Y = R'SR

    ∂ log|Ã| / ∂θ_i        = 2 tr(D_i T)
    ∂² log|Ã| / ∂θ_i∂θ_j   = 2 tr(S_uu D_i'GD_j) − 2 tr(D_i T D_j T) − 2 tr(D_i S_uu D_j'Y)

(G = Z'Z; the same with A, Λ'G in place of Ã, R gives log|A|'s).  r² = min over
(u, β) of ‖y − Xβ − ZΛu‖² + ‖u‖², so by the envelope theorem, with v_i = D_i ũ,
z = Z'(y − Xβ̂ − ZΛũ) and g_i = R v_i − P_u'D_i'z,

    ∂r²/∂θ_i = −2 z'v_i,     ∂²r²/∂θ_i∂θ_j = 2 v_i'G v_j − 2 g_i'S g_j,

and M = S_ββ, ∂M/∂θ_i = −(S∂Ã_iS)_ββ = −(U D_i S_uβ + its transpose), U = (SR)_β.
The traces are sums over pairs of entries of D_i and D_j, so the work beyond the
factorisation and the inverse is O(q²(q + p)) for T and Y and the entries' pairs.

``newton`` minimises over θ ≥ lower by Newton's method in a trust region, every
iteration compiled: on the profiled criterion of a kernel (``profiled_objective``;
its formulas are ``linkmix.deviance.PLSState``'s), or on any Python function giving
(f, ∇f, ∇²f) (``PythonObjective``).  ``scaled_pinv`` and ``satterthwaite_test`` are
Satterthwaite's small dense steps (``linkmix.inference`` says what they mean).
"""

from libc.math cimport INFINITY, fabs, log, sqrt
from scipy.linalg.cython_blas cimport dgemm
from scipy.linalg.cython_lapack cimport dpotrf, dpotri, dpotrs, dsyev

import numpy as np


def dense_products(const int[:, ::1] columns, const double[:, ::1] values,
                   const double[:, ::1] X, int q):
    """(G, Z'X) of Z (n × q), given per observation the K columns of u it touches
    (``columns``) and Z's values there (``values``): G = Z'Z (q × q) and Z'X (q × p),
    both column-major."""
    cdef Py_ssize_t n = columns.shape[0], K = columns.shape[1], w = X.shape[1]
    cdef Py_ssize_t i, a, b, j
    cdef int ca
    cdef double va
    G_arr = np.zeros((q, q), order="F")
    ZtX_arr = np.zeros((q, w), order="F")
    cdef double[::1, :] G = G_arr
    cdef double[::1, :] ZtX = ZtX_arr
    for i in range(n):
        for a in range(K):
            ca = columns[i, a]
            va = values[i, a]
            for b in range(K):
                G[ca, columns[i, b]] += va * values[i, b]
            for j in range(w):
                ZtX[ca, j] += va * X[i, j]
    return G_arr, ZtX_arr


cdef void _symmetrize_lower(double[::1, :] A, int n) noexcept nogil:
    cdef int i, j
    for j in range(n):
        for i in range(j + 1, n):
            A[j, i] = A[i, j]


cdef class DenseCurvature:
    """θ → the criterion's parts and their exact derivatives, for a small model.

    Parameters
    ----------
    columns, values : ndarray
        Z (n × q) as ``dense_products`` takes it: per observation the columns of u it
        touches (int32) and Z's values there.
    X : ndarray
        n × p.  The response comes from ``set_response``, which must be called before
        ``evaluate``.
    q : int
        Number of random effects (u's length).
    entry_row, entry_col, entry_ptr : int32 arrays
        The entries (r, c) of Λ that are θ_i, for i = 0 … d − 1, at
        ``entry_ptr[i] … entry_ptr[i + 1] − 1``.
    REML : bool
        Whether ℓ is log|Ã| = log|A| + log|R_X|² (REML) or log|A| (ML).

    After ``evaluate(theta, order)``: ``logdet_A``, ``logdet_RX``, ``r2``, ``beta``;
    with order ≥ 1 ``grad_ell`` and ``grad_r2``; with order 2 ``hess_ell``,
    ``hess_r2``, ``M`` and ``dM`` (d × p × p).
    """

    cdef readonly int q, p, d, m
    cdef readonly bint REML
    cdef double[::1, :] G, ZtXy, XyXy, GL, C, S, Sl, SR, Y, U, V, GV, Rv, Sg
    cdef int[::1] e_row, e_col, e_ptr
    cdef const int[:, ::1] columns
    cdef const double[:, ::1] values, X
    cdef double[::1] v, z, gl, gr
    cdef double[:, ::1] hl, hr, Mb
    cdef double[:, :, ::1] dMb
    cdef readonly double logdet_A, logdet_RX, r2

    def __init__(self, columns, values, X, int q, entry_row, entry_col, entry_ptr,
                 bint REML):
        self.columns = np.ascontiguousarray(columns, dtype=np.int32)
        self.values = np.ascontiguousarray(values, dtype=float)
        self.X = np.ascontiguousarray(X, dtype=float)
        G, ZtX = dense_products(self.columns, self.values, self.X, q)
        XtX = np.asarray(self.X).T @ np.asarray(self.X)
        self.q = q
        self.p = self.X.shape[1]
        self.d = len(entry_ptr) - 1
        self.m = self.q + self.p + 1
        self.REML = REML
        self.G = G
        products = np.zeros((self.q, self.p + 1), order="F")
        products[:, :self.p] = ZtX
        self.ZtXy = products
        products = np.zeros((self.p + 1, self.p + 1), order="F")
        products[:self.p, :self.p] = XtX
        self.XyXy = products
        self.e_row = np.ascontiguousarray(entry_row, dtype=np.int32)
        self.e_col = np.ascontiguousarray(entry_col, dtype=np.int32)
        self.e_ptr = np.ascontiguousarray(entry_ptr, dtype=np.int32)
        q, p, m, d = self.q, self.p, self.m, self.d
        self.GL = np.empty((q, q), order="F")
        self.C = np.empty((m, m), order="F")
        self.S = np.empty((q + p, q + p), order="F")
        self.Sl = np.empty((q, q), order="F")
        self.SR = np.empty((q + p, q), order="F")
        self.Y = np.empty((q, q), order="F")
        self.U = np.empty((max(p, 1), q), order="F")
        self.V = np.empty((q, max(d, 1)), order="F")
        self.GV = np.empty((q, max(d, 1)), order="F")
        self.Rv = np.empty((q + p, max(d, 1)), order="F")
        self.Sg = np.empty((q + p, max(d, 1)), order="F")
        self.v = np.empty(q + p)
        self.z = np.empty(q)
        self.gl = np.zeros(d)
        self.gr = np.zeros(d)
        self.hl = np.zeros((d, d))
        self.hr = np.zeros((d, d))
        self.Mb = np.zeros((p, p))
        self.dMb = np.zeros((d, p, p))
        self.logdet_A = self.logdet_RX = self.r2 = np.nan

    # the last evaluation's parts, as copies
    @property
    def beta(self):
        return np.array(self.v[self.q:])

    @property
    def u(self):
        return np.array(self.v[:self.q])

    @property
    def grad_ell(self):
        return np.array(self.gl)

    @property
    def grad_r2(self):
        return np.array(self.gr)

    @property
    def hess_ell(self):
        return np.array(self.hl)

    @property
    def hess_r2(self):
        return np.array(self.hr)

    @property
    def M(self):
        return np.array(self.Mb)

    @property
    def dM(self):
        return np.array(self.dMb)

    def A_factor(self):
        """The lower Cholesky factor L (q × q) of A = Λ'Z'ZΛ + I from the last
        ``evaluate``."""
        out = np.zeros((self.q, self.q))
        cdef int i, j
        for j in range(self.q):
            for i in range(j, self.q):
                out[i, j] = self.C[i, j]
        return out

    def RX_factor(self):
        """The lower Cholesky factor R_X' (p × p) of X'V₀⁻¹X from the last
        ``evaluate``."""
        out = np.zeros((self.p, self.p))
        cdef int i, j
        for j in range(self.p):
            for i in range(j, self.p):
                out[i, j] = self.C[self.q + i, self.q + j]
        return out

    def set_response(self, const double[::1] y):
        """Take a response y (n) of the design: Z'y, X'y and y'y are recomputed, nothing
        else."""
        cdef const int[:, ::1] columns = self.columns
        cdef const double[:, ::1] values = self.values, X = self.X
        cdef Py_ssize_t n = columns.shape[0], K = columns.shape[1], i, a, j
        cdef int p = self.p
        cdef double s
        if y.shape[0] != n:
            raise ValueError(f"the response has {y.shape[0]} entries, not {n}")
        for a in range(self.q):
            self.ZtXy[a, p] = 0.0
        for i in range(n):
            for a in range(K):
                self.ZtXy[columns[i, a], p] += values[i, a] * y[i]
        for j in range(p):
            s = 0.0
            for i in range(n):
                s += X[i, j] * y[i]
            self.XyXy[j, p] = self.XyXy[p, j] = s
        s = 0.0
        for i in range(n):
            s += y[i] * y[i]
        self.XyXy[p, p] = s
        self.logdet_A = self.logdet_RX = self.r2 = np.nan

    def evaluate(self, const double[::1] theta, int order=2):
        """Factor Ã at θ and compute the parts up to ``order`` (0, 1 or 2); False where
        the system is not positive definite (or r² = 0)."""
        if theta.shape[0] != self.d:
            raise ValueError(f"theta has {theta.shape[0]} entries, not {self.d}")
        return bool(self._evaluate(theta, order))

    def profiled_objective(self, int n):
        """The profiled criterion over n observations (ML or REML as the kernel) as an
        ``Objective`` for ``newton``; calling it gives (d, ∇d, ∇²d) or None."""
        return _KernelObjective(self, n)

    cdef int _evaluate(self, const double[::1] theta, int order) noexcept:
        cdef int q = self.q, p = self.p, m = self.m, d = self.d, qp = q + p
        cdef int i, j, e, f, r, c, a, b, x, y, info = 0, nl
        cdef double t, s, total
        cdef double[::1, :] G = self.G, GL = self.GL, C = self.C, ZtXy = self.ZtXy
        cdef int[::1] er = self.e_row, ec = self.e_col, ep = self.e_ptr
        # GΛ by Λ's entries, then C = [Λ'GΛ + I, Λ'Z'[X y]; ., [X y]'[X y]]
        GL[:, :] = 0.0
        C[:, :] = 0.0
        for i in range(d):
            t = theta[i]
            for e in range(ep[i], ep[i + 1]):
                r, c = er[e], ec[e]
                for x in range(q):
                    GL[x, c] += t * G[x, r]
        for i in range(d):
            t = theta[i]
            for e in range(ep[i], ep[i + 1]):
                r, c = er[e], ec[e]
                for x in range(q):
                    C[c, x] += t * GL[r, x]
                for j in range(p + 1):
                    C[q + j, c] += t * ZtXy[r, j]
        for x in range(q):
            C[x, x] += 1.0
        for j in range(p + 1):
            for x in range(j, p + 1):
                C[q + x, q + j] = self.XyXy[x, j]
        dpotrf(b"L", &m, &C[0, 0], &m, &info)
        if info != 0:
            return 0
        total = 0.0
        for x in range(q):
            total += log(C[x, x])
        self.logdet_A = 2.0 * total
        total = 0.0
        for x in range(q, qp):
            total += log(C[x, x])
        self.logdet_RX = 2.0 * total
        self.r2 = C[m - 1, m - 1] * C[m - 1, m - 1]
        # (ũ, β̂) from L̃'v = l, l the last row of the factor
        cdef double[::1] v = self.v
        for x in range(qp):
            v[x] = C[m - 1, x]
        for x in range(qp - 1, -1, -1):
            s = v[x]
            for y in range(x + 1, qp):
                s -= C[y, x] * v[y]
            v[x] = s / C[x, x]
        if order < 1:
            return 1
        self._first_order()
        if order >= 2:
            self._second_order()
        return 1

    cdef void _first_order(self) noexcept:
        cdef int q = self.q, p = self.p, m = self.m, d = self.d, qp = q + p
        cdef int i, e, r, c, x, y, info = 0, nl
        cdef double s
        cdef double[::1, :] C = self.C, S = self.S, Sl = self.Sl, GL = self.GL
        cdef double[::1, :] ZtXy = self.ZtXy, SR = self.SR
        cdef double[::1] v = self.v, z = self.z
        cdef int[::1] er = self.e_row, ec = self.e_col, ep = self.e_ptr
        cdef double one = 1.0, zero = 0.0
        # z = Z'(y − Xβ̂) − GΛũ
        for x in range(q):
            s = ZtXy[x, p]
            for y in range(p):
                s -= ZtXy[x, y] * v[q + y]
            for y in range(q):
                s -= GL[x, y] * v[y]
            z[x] = s
        cdef double[::1] gr = self.gr
        for i in range(d):
            s = 0.0
            for e in range(ep[i], ep[i + 1]):
                s += z[er[e]] * v[ec[e]]
            gr[i] = -2.0 * s
        # S = Ã⁻¹ over (u, β); ℓ's inverse Sl: S's u block (REML) or A⁻¹ (ML)
        for y in range(qp):
            for x in range(y, qp):
                S[x, y] = C[x, y]
        if qp:
            dpotri(b"L", &qp, &S[0, 0], &qp, &info)
            _symmetrize_lower(S, qp)
        if not self.REML and q:
            for y in range(q):
                for x in range(y, q):
                    Sl[x, y] = C[x, y]
            dpotri(b"L", &q, &Sl[0, 0], &q, &info)
            _symmetrize_lower(Sl, q)
        # SR = S_ℓ R_ℓ (R_ℓ = [Λ'G; X'Z] for REML, Λ'G for ML); T is its u block
        nl = qp if self.REML else q
        if q:
            if self.REML:
                dgemm(b"N", b"T", &nl, &q, &q, &one, &S[0, 0], &qp, &GL[0, 0], &q, &zero,
                      &SR[0, 0], &qp)
                if p:
                    dgemm(b"N", b"T", &nl, &q, &p, &one, &S[0, q], &qp, &ZtXy[0, 0], &q, &one,
                          &SR[0, 0], &qp)
            else:
                dgemm(b"N", b"T", &q, &q, &q, &one, &Sl[0, 0], &q, &GL[0, 0], &q, &zero,
                      &SR[0, 0], &qp)
        cdef double[::1] gl = self.gl
        for i in range(d):
            s = 0.0
            for e in range(ep[i], ep[i + 1]):
                s += SR[ec[e], er[e]]
            gl[i] = 2.0 * s

    cdef void _second_order(self) noexcept:
        cdef int q = self.q, p = self.p, d = self.d, qp = q + p
        cdef int i, j, e, f, a, b, c, w, x, y, nl = qp if self.REML else q
        cdef double s, s2
        cdef double one = 1.0, zero = 0.0
        cdef double[::1, :] G = self.G, GL = self.GL, S = self.S, SR = self.SR, Y = self.Y
        cdef double[::1, :] ZtXy = self.ZtXy, U = self.U, V = self.V, GV = self.GV
        cdef double[::1, :] Rv = self.Rv, Sg = self.Sg
        cdef double[::1, :] Sl = self.S if self.REML else self.Sl
        cdef double[::1] v = self.v, z = self.z
        cdef int[::1] er = self.e_row, ec = self.e_col, ep = self.e_ptr
        # Y = R_ℓ'S_ℓR_ℓ = GΛ·SR_u (+ Z'X·SR_β for REML)
        if q:
            dgemm(b"N", b"N", &q, &q, &q, &one, &GL[0, 0], &q, &SR[0, 0], &qp, &zero,
                  &Y[0, 0], &q)
            if self.REML and p:
                dgemm(b"N", b"N", &q, &q, &p, &one, &ZtXy[0, 0], &q, &SR[q, 0], &qp, &one,
                      &Y[0, 0], &q)
        cdef double[:, ::1] hl = self.hl
        for i in range(d):
            for j in range(i, d):
                s = 0.0
                for e in range(ep[i], ep[i + 1]):
                    a, b = er[e], ec[e]
                    for f in range(ep[j], ep[j + 1]):
                        c, w = er[f], ec[f]
                        s += (Sl[w, b] * G[a, c] - SR[b, c] * SR[w, a]
                              - Sl[b, w] * Y[c, a])
                hl[i, j] = hl[j, i] = 2.0 * s
        # r²'s Hessian: V = [D_i ũ], g_i = R v_i − P_u'D_i'z
        V[:, :] = 0.0
        Rv[:, :] = 0.0
        for i in range(d):
            for e in range(ep[i], ep[i + 1]):
                V[er[e], i] += v[ec[e]]
        if q and d:
            dgemm(b"N", b"N", &q, &d, &q, &one, &G[0, 0], &q, &V[0, 0], &q, &zero,
                  &GV[0, 0], &q)
            dgemm(b"T", b"N", &q, &d, &q, &one, &GL[0, 0], &q, &V[0, 0], &q, &zero,
                  &Rv[0, 0], &qp)
            if p:
                dgemm(b"T", b"N", &p, &d, &q, &one, &ZtXy[0, 0], &q, &V[0, 0], &q, &zero,
                      &Rv[q, 0], &qp)
        for i in range(d):
            for e in range(ep[i], ep[i + 1]):
                Rv[ec[e], i] -= z[er[e]]
        if qp and d:
            dgemm(b"N", b"N", &qp, &d, &qp, &one, &S[0, 0], &qp, &Rv[0, 0], &qp, &zero,
                  &Sg[0, 0], &qp)
        cdef double[:, ::1] hr = self.hr
        for i in range(d):
            for j in range(i, d):
                s = 0.0
                for x in range(q):
                    s += V[x, i] * GV[x, j]
                s2 = 0.0
                for x in range(qp):
                    s2 += Rv[x, i] * Sg[x, j]
                hr[i, j] = hr[j, i] = 2.0 * (s - s2)
        # M = S_ββ and ∂M/∂θ_i = −(U D_i S_uβ + transpose), U = S_β(u,β) R
        cdef double[:, ::1] Mv = self.Mb
        cdef double[:, :, ::1] dMv = self.dMb
        dMv[:, :, :] = 0.0
        for x in range(p):
            for y in range(p):
                Mv[x, y] = S[q + x, q + y]
        if p and q:
            dgemm(b"N", b"T", &p, &q, &q, &one, &S[q, 0], &qp, &GL[0, 0], &q, &zero,
                  &U[0, 0], &p)
            dgemm(b"N", b"T", &p, &q, &p, &one, &S[q, q], &qp, &ZtXy[0, 0], &q, &one,
                  &U[0, 0], &p)
            for i in range(d):
                for e in range(ep[i], ep[i + 1]):
                    a, b = er[e], ec[e]
                    for x in range(p):
                        for y in range(p):
                            dMv[i, x, y] -= U[x, a] * S[b, q + y]
                for x in range(p):
                    for y in range(x, p):
                        s = dMv[i, x, y] + dMv[i, y, x]
                        dMv[i, x, y] = dMv[i, y, x] = s

    cdef int _profiled(self, const double[::1] theta, int n, double* f, double[::1] g,
                       double[:, ::1] H) noexcept:
        """d = ℓ + m(1 + log(2πr²/m)), ∇d = ∇ℓ + m∇r²/r², ∇²d = ∇²ℓ + m(∇²r²/r² −
        ∇r²∇r²'/r⁴), m = n − p for REML (ℓ = log|A| + log|R_X|²), n for ML; 0 where the
        system is not positive definite or r² = 0."""
        cdef int i, j, d = self.d
        cdef double m = n - (self.p if self.REML else 0), r2
        if not self._evaluate(theta, 2) or not self.r2 > 0:
            return 0
        r2 = self.r2
        f[0] = (self.logdet_A + (self.logdet_RX if self.REML else 0.0)
                + m * (1.0 + log(2.0 * 3.141592653589793 * r2 / m)))
        for i in range(d):
            g[i] = self.gl[i] + m * self.gr[i] / r2
            for j in range(d):
                H[i, j] = self.hl[i, j] + m * (self.hr[i, j] / r2
                                               - self.gr[i] * self.gr[j] / (r2 * r2))
        return 1


cdef class Objective:
    """f(x) with its exact gradient and Hessian, for ``newton``."""

    cdef readonly int d

    cdef int fgh(self, const double[::1] x, double* f, double[::1] g,
                 double[:, ::1] H) except -1:
        return 0

    def __call__(self, x):
        """(f, ∇f, ∇²f) at x, or None where f is not finite."""
        x = np.ascontiguousarray(x, dtype=float)
        g, H = np.empty(self.d), np.empty((self.d, self.d))
        cdef double f = 0.0
        if not self.fgh(x, &f, g, H):
            return None
        return f, g, H


cdef class _KernelObjective(Objective):
    cdef DenseCurvature kernel
    cdef int n

    def __init__(self, DenseCurvature kernel, int n):
        self.kernel, self.n, self.d = kernel, n, kernel.d

    cdef int fgh(self, const double[::1] x, double* f, double[::1] g,
                 double[:, ::1] H) except -1:
        return self.kernel._profiled(x, self.n, f, g, H)


cdef class PythonObjective(Objective):
    """An ``Objective`` from a Python function x → (f, ∇f, ∇²f) or None."""

    cdef object function

    def __init__(self, function, int d):
        self.function, self.d = function, d

    cdef int fgh(self, const double[::1] x, double* f, double[::1] g,
                 double[:, ::1] H) except -1:
        point = np.empty(self.d)
        cdef double[::1] copy = point
        copy[:] = x
        found = self.function(point)
        if found is None:
            return 0
        cdef double[::1] slope = np.ascontiguousarray(found[1], dtype=float)
        cdef double[:, ::1] curvature = np.ascontiguousarray(found[2], dtype=float)
        f[0] = float(found[0])
        g[:] = slope
        H[:, :] = curvature
        return 1


def newton(Objective objective, x0, lower, int maxiter, double rounding):
    """Newton's method in a trust region over x ≥ lower (``linkmix.optimize.
    minimize_newton`` documents the rule).  Returns (x, f, g, H, stopped, log_x,
    log_f): the last accepted point with its derivatives, whether the rule stopped it
    (not the iteration limit or a vanishing radius), and every evaluated point."""
    cdef int d = objective.d, k, a, b, it, nf, info = 0, n_log = 0, lwork, one = 1
    cdef int stopped = 0, ok, any_bound, flip
    cdef double f = INFINITY, ft = INFINITY, radius = 1.0, decrement, shift, length
    cdef double predicted, actual, taken, inward, dot, slack
    x_arr = np.maximum(np.asarray(x0, dtype=float), lower)
    cdef double[::1] x = x_arr
    cdef const double[::1] lo = np.ascontiguousarray(lower, dtype=float)
    g_arr, H_arr = np.zeros(d), np.zeros((d, d))
    cdef double[::1] g = g_arr
    cdef double[:, ::1] H = H_arr
    cdef double[::1] tg = np.zeros(d), trial = np.zeros(d), step = np.zeros(d)
    cdef double[:, ::1] tH = np.zeros((d, d))
    cdef double[::1, :] Hf = np.zeros((max(d, 1), max(d, 1)), order="F")
    cdef int ldh = Hf.shape[0]
    cdef double[::1] gf = np.zeros(max(d, 1)), move = np.zeros(max(d, 1))
    cdef double[::1] w = np.zeros(max(d, 1)), coef = np.zeros(max(d, 1))
    lwork = max(1, 3 * d)
    cdef double[::1] work = np.zeros(lwork)
    cdef int[::1] free = np.zeros(max(d, 1), dtype=np.int32)
    cdef int[::1] bound = np.zeros(max(d, 1), dtype=np.int32)
    log_x_arr, log_f_arr = np.zeros((maxiter + 1, d)), np.full(maxiter + 1, INFINITY)
    cdef double[:, ::1] log_x = log_x_arr
    cdef double[::1] log_f = log_f_arr

    ok = objective.fgh(x, &f, g, H)
    log_x[0, :] = x
    log_f[0] = f if ok else INFINITY
    n_log = 1
    if not ok:
        return x_arr, INFINITY, g_arr, H_arr, False, log_x_arr[:1], log_f_arr[:1]
    for it in range(maxiter):
        nf = 0
        for k in range(d):
            bound[k] = x[k] <= lo[k]
            if not (bound[k] and g[k] > 0.0):
                free[nf] = k
                nf += 1
        if nf == 0:
            stopped = 1
            break
        for a in range(nf):
            gf[a] = g[free[a]]
            for b in range(nf):
                Hf[a, b] = H[free[a], free[b]]
        dpotrf(b"L", &nf, &Hf[0, 0], &ldh, &info)
        if info == 0:   # positive definite: the Newton step
            for a in range(nf):
                move[a] = -gf[a]
            dpotrs(b"L", &nf, &one, &Hf[0, 0], &ldh, &move[0], &ldh, &info)
            decrement = 0.0
            for a in range(nf):
                decrement -= 0.5 * gf[a] * move[a]
            stopped = decrement <= rounding * max(1.0, fabs(f))
        else:   # shifted to definite, and down the most negative curvature
            for a in range(nf):
                for b in range(nf):
                    Hf[a, b] = H[free[a], free[b]]
            dsyev(b"V", b"L", &nf, &Hf[0, 0], &ldh, &w[0], &work[0], &lwork, &info)
            if info != 0:
                break
            shift = 1.5 * max(-w[0], 0.0) + 1e-8 * max(1.0, fabs(w[nf - 1]))
            for a in range(nf):
                dot = 0.0
                for b in range(nf):
                    dot += Hf[b, a] * gf[b]
                coef[a] = dot / (w[a] + shift)
            any_bound, inward, dot = 0, 0.0, 0.0
            for b in range(nf):
                move[b] = 0.0
                for a in range(nf):
                    move[b] -= Hf[b, a] * coef[a]
                if bound[free[b]]:
                    any_bound = 1
                    inward += Hf[b, 0]
                dot += gf[b] * Hf[b, 0]
            flip = (inward < 0) if (any_bound and inward != 0) else (dot > 0)
            for b in range(nf):
                move[b] += (-radius if flip else radius) * Hf[b, 0]
        length = 0.0
        for a in range(nf):
            length += move[a] * move[a]
        length = sqrt(length)
        if length > radius:
            for a in range(nf):
                move[a] *= radius / length
        trial[:] = x
        for a in range(nf):
            trial[free[a]] += move[a]
        taken, predicted = 0.0, 0.0
        for k in range(d):
            if trial[k] < lo[k]:
                trial[k] = lo[k]
            step[k] = trial[k] - x[k]
            taken += step[k] * step[k]
        if taken == 0.0:
            stopped = 1
            break
        taken = sqrt(taken)
        for k in range(d):
            predicted -= g[k] * step[k]
            for a in range(d):
                predicted -= 0.5 * step[k] * H[k, a] * step[a]
        ok = objective.fgh(trial, &ft, tg, tH)
        log_x[n_log, :] = trial
        log_f[n_log] = ft if ok else INFINITY
        n_log += 1
        slack = rounding * max(1.0, fabs(f))
        if stopped:   # one last step, taken where f does not rise past its rounding
            if ok and ft <= f + slack:
                x[:] = trial
                g[:] = tg
                H[:, :] = tH
                f = ft
            break
        if not ok or not ft <= f + slack:
            radius = 0.25 * taken
            dot = 0.0
            for k in range(d):
                dot += x[k] * x[k]
            if radius <= 1e-12 * max(1.0, sqrt(dot)):
                break
            continue
        actual = f - ft
        if predicted > 0 and actual > 0.75 * predicted and taken >= 0.9 * radius:
            radius *= 2.0
        x[:] = trial
        g[:] = tg
        H[:, :] = tH
        f = ft
    return (x_arr, f, g_arr, H_arr, bool(stopped), log_x_arr[:n_log].copy(),
            log_f_arr[:n_log].copy())


def scaled_pinv(const double[:, :] H, double rtol):
    """(H⁺, eigenvalues of S) for a symmetric H (``linkmix.inference``'s rule): H⁺ =
    D S⁺ D with S = D·(H + H')/2·D scaled to a unit diagonal (D_kk = H_kk^(−1/2), 1 where
    H_kk ≤ 0) and S⁺ its inverse over the eigenvalues above ``rtol`` times the largest
    (ascending, as LAPACK's dsyev gives them)."""
    cdef int d = H.shape[0], i, j, k, info = 0, lwork = max(1, 3 * H.shape[0])
    cdef double top = 0.0, s
    scale_arr, values_arr = np.ones(d), np.zeros(d)
    cdef double[::1] D = scale_arr, w = values_arr, work = np.zeros(lwork)
    cdef double[::1, :] V = np.zeros((max(d, 1), max(d, 1)), order="F")
    out_arr = np.zeros((d, d))
    cdef double[:, ::1] out = out_arr
    for i in range(d):
        if H[i, i] > 0:
            D[i] = 1.0 / sqrt(H[i, i])
    for j in range(d):
        for i in range(d):
            V[i, j] = 0.5 * (H[i, j] + H[j, i]) * D[i] * D[j]
    if d:
        dsyev(b"V", b"L", &d, &V[0, 0], &d, &w[0], &work[0], &lwork, &info)
        if info != 0:
            raise np.linalg.LinAlgError("the eigenvalues of the scaled Hessian did not converge")
    for k in range(d):
        top = max(top, w[k])
    for i in range(d):
        for j in range(d):
            s = 0.0
            for k in range(d):
                if w[k] > rtol * top:
                    s += V[i, k] * V[j, k] / w[k]
            out[i, j] = D[i] * s * D[j]
    return out_arr, values_arr


def satterthwaite_test(const double[:, :] L, const double[:, :] vcov,
                       const double[:, :] A, const double[:, :, :] J):
    """(v, df) for each row λ of L: v = λ'Φλ (Φ = ``vcov``), g_k = λ'J_kλ and
    df = 2v²/g'Ag (inf where g'Ag ≤ 0)."""
    cdef Py_ssize_t r = L.shape[0], p = L.shape[1], m = J.shape[0], row, a, b, k, l
    cdef double v, s, den
    variance_arr, df_arr = np.zeros(r), np.zeros(r)
    cdef double[::1] variance = variance_arr, df = df_arr, g = np.zeros(max(m, 1))
    for row in range(r):
        v = 0.0
        for a in range(p):
            for b in range(p):
                v += L[row, a] * vcov[a, b] * L[row, b]
        for k in range(m):
            s = 0.0
            for a in range(p):
                for b in range(p):
                    s += L[row, a] * J[k, a, b] * L[row, b]
            g[k] = s
        den = 0.0
        for k in range(m):
            for l in range(m):
                den += g[k] * A[k, l] * g[l]
        variance[row] = v
        df[row] = 2.0 * v * v / den if den > 0 else INFINITY
    return variance_arr, df_arr
