# cython: language_level=3
"""Compiled exact second derivatives of a small linear mixed model's criterion.

Owns arithmetic only: for a model small enough to hold the augmented system
``Ã = W'W + diag(I_q, 0)`` (W = [ZΛ_θ, X]) and its inverse densely, one call at θ
gives log|A| (A = Λ'Z'ZΛ + I), log|R_X|², r², β̂ and ũ, and on request their exact
first and second derivatives in θ and the derivative of M = (X'V₀⁻¹X)⁻¹, which
every θ-dependent curvature of the model is made of (the convergence checks' Hessian,
the Newton polish, Satterthwaite's degrees of freedom).  ``linkmix.model`` gives the
numbers meaning; ``linkmix.engine`` owns the factorisations the optimiser uses.

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
"""

from libc.math cimport log
from scipy.linalg.cython_blas cimport dgemm
from scipy.linalg.cython_lapack cimport dpotrf, dpotri

import numpy as np


def dense_products(const int[:, ::1] columns, const double[:, ::1] values,
                   const double[:, ::1] Xy, int q):
    """(G, Z'[X y]) of Z (n × q), given per observation the K columns of u it touches
    (``columns``) and Z's values there (``values``): G = Z'Z (q × q) and Z'[X y]
    (q × (p + 1)), both column-major."""
    cdef Py_ssize_t n = columns.shape[0], K = columns.shape[1], w = Xy.shape[1]
    cdef Py_ssize_t i, a, b, j
    cdef int ca
    cdef double va
    G_arr = np.zeros((q, q), order="F")
    ZtXy_arr = np.zeros((q, w), order="F")
    cdef double[::1, :] G = G_arr
    cdef double[::1, :] ZtXy = ZtXy_arr
    for i in range(n):
        for a in range(K):
            ca = columns[i, a]
            va = values[i, a]
            for b in range(K):
                G[ca, columns[i, b]] += va * values[i, b]
            for j in range(w):
                ZtXy[ca, j] += va * Xy[i, j]
    return G_arr, ZtXy_arr


cdef void _symmetrize_lower(double[::1, :] A, int n) noexcept nogil:
    cdef int i, j
    for j in range(n):
        for i in range(j + 1, n):
            A[j, i] = A[i, j]


cdef class DenseCurvature:
    """θ → the criterion's parts and their exact derivatives, for a small model.

    Parameters
    ----------
    G, ZtXy, XyXy : ndarray
        Z'Z (q × q), Z'[X y] (q × (p + 1)) and [X y]'[X y], column-major.
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
    cdef double[::1] v, z
    cdef readonly double logdet_A, logdet_RX, r2
    cdef readonly object beta, u, grad_ell, grad_r2, hess_ell, hess_r2, M, dM

    def __init__(self, G, ZtXy, XyXy, entry_row, entry_col, entry_ptr, bint REML):
        self.q = G.shape[0]
        self.p = ZtXy.shape[1] - 1
        self.d = len(entry_ptr) - 1
        self.m = self.q + self.p + 1
        self.REML = REML
        self.G = np.asfortranarray(G, dtype=float)
        self.ZtXy = np.asfortranarray(ZtXy, dtype=float)
        self.XyXy = np.asfortranarray(XyXy, dtype=float)
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
        self.logdet_A = self.logdet_RX = self.r2 = np.nan

    def set_response_products(self, ZtXy, XyXy):
        """Replace Z'[X y] and [X y]'[X y] (another response of the same design)."""
        self.ZtXy[:, :] = ZtXy
        self.XyXy[:, :] = XyXy

    def evaluate(self, const double[::1] theta, int order=2):
        """Factor Ã at θ and compute the parts up to ``order`` (0, 1 or 2); False where
        the system is not positive definite (or r² = 0)."""
        cdef int q = self.q, p = self.p, m = self.m, d = self.d, qp = q + p
        cdef int i, j, e, f, r, c, a, b, x, y, info = 0, nl
        cdef double t, s, total
        cdef double[::1, :] G = self.G, GL = self.GL, C = self.C, ZtXy = self.ZtXy
        cdef int[::1] er = self.e_row, ec = self.e_col, ep = self.e_ptr
        if theta.shape[0] != d:
            raise ValueError(f"theta has {theta.shape[0]} entries, not {d}")
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
            return False
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
        self.beta = np.asarray(v[q:]).copy()
        self.u = np.asarray(v[:q]).copy()
        if order < 1:
            return True
        self._first_order(theta)
        if order >= 2:
            self._second_order()
        return True

    cdef void _first_order(self, const double[::1] theta):
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
        grad_r2 = np.zeros(d)
        cdef double[::1] gr = grad_r2
        for i in range(d):
            s = 0.0
            for e in range(ep[i], ep[i + 1]):
                s += z[er[e]] * v[ec[e]]
            gr[i] = -2.0 * s
        self.grad_r2 = grad_r2
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
        grad_ell = np.zeros(d)
        cdef double[::1] gl = grad_ell
        for i in range(d):
            s = 0.0
            for e in range(ep[i], ep[i + 1]):
                s += SR[ec[e], er[e]]
            gl[i] = 2.0 * s
        self.grad_ell = grad_ell

    cdef void _second_order(self):
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
        hess_ell = np.zeros((d, d))
        cdef double[:, ::1] hl = hess_ell
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
        self.hess_ell = hess_ell
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
        hess_r2 = np.zeros((d, d))
        cdef double[:, ::1] hr = hess_r2
        for i in range(d):
            for j in range(i, d):
                s = 0.0
                for x in range(q):
                    s += V[x, i] * GV[x, j]
                s2 = 0.0
                for x in range(qp):
                    s2 += Rv[x, i] * Sg[x, j]
                hr[i, j] = hr[j, i] = 2.0 * (s - s2)
        self.hess_r2 = hess_r2
        # M = S_ββ and ∂M/∂θ_i = −(U D_i S_uβ + transpose), U = S_β(u,β) R
        M = np.empty((p, p))
        dM = np.zeros((d, p, p))
        cdef double[:, ::1] Mv = M
        cdef double[:, :, ::1] dMv = dM
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
        self.M = M
        self.dM = dM
