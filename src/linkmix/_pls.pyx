# cython: language_level=3
"""Compiled arithmetic of the penalised least-squares (PLS) deviance.

This module owns numbers only, never meaning: it maps θ to the blocks of Λ,
forms the values of Λ'Z'ZΛ + I (and its cross-products with X and y), factors
them, and returns log-determinants.  Two layouts are served:

* the *blocked* layout (``BlockedSystem``): the first random-effects term's
  block of Λ'Z'ZΛ + I is block diagonal, so it is factored level by level; the
  Schur complement of everything else (later terms, X, y) is dense and is
  factored by LAPACK.  This is MixedModels.jl's insight, with all blocks after
  the first merged into one dense block.
* the *sparse* layout (``lambdat_zt_values``): writes the values of Λ'Z' in
  place into a CSC matrix whose pattern CHOLMOD has analysed once.

Small dense helpers serve the same hot paths without numpy's or scipy's per-call
wrappers: the column-scaled Householder QR (``scaled_qr``, ``pow2_column_scales``)
and triangular solves on blocks of a factor (``triangular_solve``).

A θ-template describes the lower-triangular factor T of each term: for term
``t`` with ``k`` coefficients, ``tmpl[tmpl_off[t] + a*k + b]`` is the index into
θ of ``T[a, b]`` (row-major), or -1 where ``T[a, b]`` is structurally zero.
"""

from libc.math cimport INFINITY, fabs, frexp, ldexp, log, sqrt
from libc.stdint cimport int64_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dtrsm
from scipy.linalg.cython_lapack cimport dgeqrf, dorgqr, dpotrf

import numpy as np


cdef inline void _fill_T(const double[::1] theta, const int[::1] tmpl,
                         int off, int k, double* T) noexcept nogil:
    cdef int a
    cdef int idx
    for a in range(k * k):
        idx = tmpl[off + a]
        T[a] = theta[idx] if idx >= 0 else 0.0


cdef void _fill_lambda_blocks(const double[::1] theta, const int[::1] tmpl,
                              const int[::1] tmpl_off, const int[::1] term_k,
                              double[::1] out) noexcept nogil:
    """Write every term's T (row-major, concatenated at ``tmpl_off``) into ``out``."""
    cdef int t
    for t in range(term_k.shape[0]):
        _fill_T(theta, tmpl, tmpl_off[t], term_k[t], &out[tmpl_off[t]])


def lambdat_zt_values(const double[::1] theta, const int[::1] tmpl,
                      const int[::1] tmpl_off, const int[::1] term_k,
                      const double[:, ::1] Zcat, double[::1] data):
    """Values of Λ'Z' (q × n, CSC, Σk entries per column) for the sparse layout.

    ``Zcat`` holds each observation's raw random-effects covariates, the terms'
    columns side by side.  For observation i and term t with level ℓ, rows
    ``off_t + kℓ + a`` of column i receive ``Σ_{s≥a} T_t[s, a] z_{t,i,s}``.
    """
    cdef Py_ssize_t n = Zcat.shape[0], i
    cdef int nterm = term_k.shape[0], t, a, s, k, col0, width = Zcat.shape[1]
    cdef double acc
    cdef double[::1] Tbuf = np.empty(max(1, tmpl.shape[0]))
    _fill_lambda_blocks(theta, tmpl, tmpl_off, term_k, Tbuf)
    with nogil:
        for i in range(n):
            col0 = 0
            for t in range(nterm):
                k = term_k[t]
                for a in range(k):
                    acc = 0.0
                    for s in range(a, k):
                        acc = acc + Tbuf[tmpl_off[t] + s * k + a] * Zcat[i, col0 + s]
                    data[i * width + col0 + a] = acc
                col0 = col0 + k


cdef void _products(const int64_t[::1] codes1, const double[:, ::1] Z1,
                    const int64_t[:, ::1] z_cols, const double[:, ::1] z_vals,
                    const int64_t[:, ::1] c_pos, const double[:, ::1] xy,
                    const int64_t[::1] xy_first, int q2, bint xy_block,
                    double[:, :, ::1] D1, double[:, ::1] c_vals, double[::1, :] G) noexcept nogil:
    """The θ-free sums of the blocked layout, in one pass over the observations.

    With observation i at level j = ``codes1[i]`` of the first term (covariates
    z1_i = ``Z1[i]``), later-term slots ``z_cols[i, c]`` holding ``z_vals[i, c]``
    and row w_i = ``xy[i]`` of [X y], sets (from zero)::

        D1[j]                      = Σ z1_i z1_i'
        C[c_pos[i, c]]             = Σ z_vals[i, c] z1_i'       (later terms × term 1)
        C[xy_first[j] + r]         = Σ w_ir z1_i'               ([X y] × term 1)
        G[z_cols[i, c], z_cols[i, d]] = Σ z_vals[i, c] z_vals[i, d]
        G[z_cols[i, c], q2 + r]    = Σ z_vals[i, c] w_ir        (and its mirror)

    and G's [X y] block Σ w_i w_i' only with ``xy_block`` (it is left to BLAS, which
    is faster for wide X, otherwise).
    """
    cdef Py_ssize_t n = codes1.shape[0], i
    cdef int k1 = Z1.shape[1], k2 = z_cols.shape[1], w = xy.shape[1], m = G.shape[0]
    cdef int j, a, b, c, d, r
    cdef int64_t pos, row
    cdef double za, zc
    memset(&D1[0, 0, 0], 0, D1.shape[0] * k1 * k1 * sizeof(double))
    memset(&c_vals[0, 0], 0, c_vals.shape[0] * k1 * sizeof(double))
    for c in range(m):
        memset(&G[0, c], 0, m * sizeof(double))
    for i in range(n):
        j = codes1[i]
        for a in range(k1):
            za = Z1[i, a]
            for b in range(k1):
                D1[j, a, b] += za * Z1[i, b]
            for c in range(k2):
                c_vals[c_pos[i, c], a] += z_vals[i, c] * za
            pos = xy_first[j]
            for r in range(w):
                c_vals[pos + r, a] += xy[i, r] * za
        for c in range(k2):
            row = z_cols[i, c]
            zc = z_vals[i, c]
            for d in range(k2):
                G[row, z_cols[i, d]] += zc * z_vals[i, d]
            for r in range(w):
                G[row, q2 + r] += zc * xy[i, r]
        if xy_block:
            for r in range(w):
                for c in range(r + 1):
                    G[q2 + r, q2 + c] += xy[i, r] * xy[i, c]
    for c in range(q2):
        for r in range(w):
            G[q2 + r, c] = G[c, q2 + r]
    if xy_block:
        for r in range(w):
            for c in range(r):
                G[q2 + c, q2 + r] = G[q2 + r, q2 + c]


def blocked_response_products(const int64_t[::1] codes1, const double[:, ::1] Z1,
                              const int64_t[:, ::1] z_cols, const double[:, ::1] z_vals,
                              const double[::1] y, const int64_t[::1] xy_first, int p,
                              double[:, ::1] c_vals, double[::1] zty):
    """The sums that involve y, for a new response: C's y row of each level j of
    term 1, Σ_{i∈j} y_i z1_i', and ``zty`` = Z2'y over the later terms' slots."""
    cdef Py_ssize_t n = codes1.shape[0], i
    cdef int k1 = Z1.shape[1], k2 = z_cols.shape[1], nlev = xy_first.shape[0]
    cdef int j, a, c
    with nogil:
        for j in range(nlev):
            for a in range(k1):
                c_vals[xy_first[j] + p, a] = 0.0
        for c in range(zty.shape[0]):
            zty[c] = 0.0
        for i in range(n):
            j = codes1[i]
            for a in range(k1):
                c_vals[xy_first[j] + p, a] += y[i] * Z1[i, a]
            for c in range(k2):
                zty[z_cols[i, c]] += z_vals[i, c] * y[i]


cdef void _slot_products(const int64_t[::1] codes1, const int64_t[:, ::1] z_cols,
                         const int64_t[:, ::1] c_pos, const int64_t[::1] xy_first, int p,
                         int q2, const double[:, :, ::1] E, const double[:, ::1] shift,
                         bint has_E, bint has_shift, double[:, :, ::1] D1,
                         double[:, ::1] c_vals, double[::1, :] G) noexcept nogil:
    """Add per-observation matrices and vectors over the random-effect slots (a Newton
    step of penalised nonlinear least squares), in one pass over the observations.

    Observation i has k1 slots of term 1 (level j = ``codes1[i]``) and k2 later-term
    slots ``z_cols[i, c]``; with ``E`` (n × K × K, K = k1 + k2; read if ``has_E``) and
    ``shift`` (n × K; read if ``has_shift``), adds::

        D1[j][a, b]                      += E[i, a, b]
        C[c_pos[i, c]][a]                += E[i, k1 + c, a]
        G[z_cols[i, c], z_cols[i, d]]    += E[i, k1 + c, k1 + d]
        C[xy_first[j] + p][a]            += shift[i, a]            (y's row of C)
        G[z_cols[i, c], q2 + p]          += shift[i, k1 + c]       (y's column, mirrored)
    """
    cdef Py_ssize_t n = codes1.shape[0], i
    cdef int k2 = z_cols.shape[1], k1 = D1.shape[1]
    cdef int j, a, b, c, d
    cdef int64_t row, ycol = q2 + p
    for i in range(n):
        j = codes1[i]
        if has_E:
            for a in range(k1):
                for b in range(k1):
                    D1[j, a, b] += E[i, a, b]
                for c in range(k2):
                    c_vals[c_pos[i, c], a] += E[i, k1 + c, a]
            for c in range(k2):
                row = z_cols[i, c]
                for d in range(k2):
                    G[row, z_cols[i, d]] += E[i, k1 + c, k1 + d]
        if has_shift:
            for a in range(k1):
                c_vals[xy_first[j] + p, a] += shift[i, a]
            for c in range(k2):
                row = z_cols[i, c]
                G[row, ycol] += shift[i, k1 + c]
                G[ycol, row] += shift[i, k1 + c]


cdef tuple _blocked_factor(const double[::1] theta, const int[::1] tmpl,
                   const int[::1] tmpl_off, const int[::1] term_k,
                   # first term: per-level k1 × k1 Gram blocks Σ z z'
                   const double[:, :, ::1] D1,
                   # cross-products C = W'Z1 (W = [Z2 X y]) by level of term 1
                   const int[::1] c_indptr, const int[::1] c_rows,
                   const double[:, ::1] c_vals,
                   # dense block: G = W'W and the block structure of Λ over W
                   const double[::1, :] G,
                   const int[::1] row_blk_off, const int[::1] row_term,
                   int q2,
                   # outputs
                   double[:, :, ::1] L11, double[:, ::1] L21,
                   double[::1, :] S,
                   # work space: T blocks, one k1 × k1 block, the diagonal scaling of Λ̃
                   double[::1] Tbuf, double[::1] Abuf, double[::1] lam):
    """Factor Λ̃'[Z W]'[Z W]Λ̃ + I_q in the blocked layout.

    With ``u = (u1, u2)``, term 1 owning ``u1``, the augmented matrix is ::

        [ T1'D1T1 + I      T1'C'Λ̃       ]      L11 L11' = T1'D1[j]T1 + I, per level j
        [ Λ̃'C T1        Λ̃'GΛ̃ + I_q2 ]      L21 = Λ̃'C_j T1 L11⁻ᵀ
                                               S   = Λ̃'GΛ̃ + I_q2 − Σ_j L21_j L21_j'

    and ``S`` is overwritten by its lower Cholesky factor.  Λ̃ acts as Λ on the
    ``q2`` columns of later terms and as the identity on X and y.

    Returns
    -------
    logdet : float
        log|L_θ|², the log-determinant of Λ'Z'ZΛ + I.
    info : int
        0 on success; otherwise LAPACK's ``info`` (the 1-based order of the first
        non-positive leading minor of ``S``), or -1 for a failed first-term block.
    logdet_x : float
        log|R_X|², from the diagonal of the factor's X block (rows q2 … m − 2), whose
        upper triangle is zeroed, so that block is the lower-triangular R_X'.
    """
    cdef int m = G.shape[0], k1 = term_k[0], nlev = D1.shape[0]
    cdef int j, a, b, c, r, s, p, pp, t, o, k, rr, info = 0
    cdef int start, stop
    cdef double acc, logdet = 0.0, logdet_x = 0.0, tv
    cdef double* T1
    cdef double* T
    cdef double* Lj
    cdef double* A
    cdef char uplo = b'L'

    _fill_lambda_blocks(theta, tmpl, tmpl_off, term_k, Tbuf)
    T1 = &Tbuf[0]
    A = &Abuf[0]

    with nogil:
        # S = Λ̃' G Λ̃.  Scalar blocks of Λ̃ scale rows and columns in one
        # column-major pass (lam = 1 elsewhere); vector blocks follow, as a right
        # then a left multiplication of their columns and rows by T.
        for r in range(m):
            lam[r] = 1.0
        r = 0
        while r < q2:
            t = row_term[r]
            if term_k[t] == 1:
                lam[r] = Tbuf[tmpl_off[t]]
            r = r + term_k[t]
        for c in range(m):
            tv = lam[c]
            for r in range(m):
                S[r, c] = G[r, c] * lam[r] * tv
        r = 0
        while r < q2:
            o = row_blk_off[r]
            t = row_term[r]
            k = term_k[t]
            T = &Tbuf[tmpl_off[t]]
            if k > 1:
                # columns o..o+k-1 of S ← S[:, block] T  (T lower: col b uses rows s ≥ b)
                for b in range(k):
                    for c in range(m):
                        acc = 0.0
                        for s in range(b, k):
                            acc = acc + S[c, o + s] * T[s * k + b]
                        S[c, o + b] = acc
                # rows: S[block, :] ← T' S[block, :]
                for c in range(m):
                    for b in range(k):
                        acc = 0.0
                        for s in range(b, k):
                            acc = acc + T[s * k + b] * S[o + s, c]
                        S[o + b, c] = acc
            r = r + k
        for r in range(q2):
            S[r, r] = S[r, r] + 1.0

        for j in range(nlev):
            # L11[j] = chol(T1' D1[j] T1 + I)
            Lj = &L11[j, 0, 0]
            for a in range(k1):
                for b in range(a + 1):
                    acc = 0.0
                    for r in range(b, k1):          # T1[r, b] nonzero for r ≥ b
                        for s in range(a, k1):      # T1[s, a] nonzero for s ≥ a
                            acc = acc + T1[r * k1 + b] * D1[j, r, s] * T1[s * k1 + a]
                    A[a * k1 + b] = acc + (1.0 if a == b else 0.0)
            for a in range(k1):
                for b in range(a + 1):
                    acc = A[a * k1 + b]
                    for c in range(b):
                        acc = acc - Lj[a * k1 + c] * Lj[b * k1 + c]
                    if a == b:
                        if acc <= 0.0:
                            info = -1
                            break
                        Lj[a * k1 + a] = sqrt(acc)
                    else:
                        Lj[a * k1 + b] = acc / Lj[b * k1 + b]
                if info != 0:
                    break
                for b in range(a + 1, k1):
                    Lj[a * k1 + b] = 0.0
            if info != 0:
                break
            for a in range(k1):
                logdet = logdet + 2.0 * log(Lj[a * k1 + a])

            start = c_indptr[j]
            stop = c_indptr[j + 1]
            # V = C_j T1
            for p in range(start, stop):
                for b in range(k1):
                    acc = 0.0
                    for s in range(b, k1):
                        acc = acc + c_vals[p, s] * T1[s * k1 + b]
                    L21[p, b] = acc
            # V ← Λ̃' V on rows of later terms; rows of a block are contiguous
            # and processed upwards, so each reads only rows not yet rewritten.
            for p in range(start, stop):
                r = c_rows[p]
                if r >= q2:
                    break
                o = row_blk_off[r]
                t = row_term[r]
                k = term_k[t]
                T = &Tbuf[tmpl_off[t]]
                a = r - o
                for b in range(k1):
                    acc = 0.0
                    for s in range(a, k):
                        acc = acc + T[s * k + a] * L21[p + s - a, b]
                    L21[p, b] = acc
            # V ← V L11⁻ᵀ (forward substitution on each row)
            for p in range(start, stop):
                for a in range(k1):
                    acc = L21[p, a]
                    for c in range(a):
                        acc = acc - Lj[a * k1 + c] * L21[p, c]
                    L21[p, a] = acc / Lj[a * k1 + a]
            # S[R, R] −= V V' (lower triangle; rows are sorted ascending)
            for p in range(start, stop):
                rr = c_rows[p]
                for pp in range(start, p + 1):
                    acc = 0.0
                    for c in range(k1):
                        acc = acc + L21[p, c] * L21[pp, c]
                    S[rr, c_rows[pp]] = S[rr, c_rows[pp]] - acc

        if info == 0:
            dpotrf(&uplo, &m, &S[0, 0], &m, &info)
            if info == 0 or info > q2:
                for r in range(q2):
                    logdet = logdet + 2.0 * log(S[r, r])
            if info == 0:
                for r in range(q2, m - 1):
                    logdet_x = logdet_x + 2.0 * log(S[r, r])
            for c in range(q2 + 1, m):  # LAPACK leaves the upper triangle as it was
                for r in range(q2, c):
                    S[r, c] = 0.0
    return logdet, info, logdet_x


cdef class BlockedSystem:
    """The blocked layout's buffers, bound once: the per-observation values (term 1's
    covariates, the later terms' slots, [X y]), their θ-free sums (D1, C, G) and the
    factor (L11, L21, S).  A refactorisation passes only θ (a deviance evaluation of a
    16-observation model costs a few μs, and argument checking of twenty buffers would
    be most of it), and a nonlinear model's PNLS (``linkmix._pnls``) rewrites the
    values and sums in place through the cdef methods.  The engine owns the arrays;
    rebind (construct anew) whenever it replaces one.
    """

    def __init__(self, tmpl, tmpl_off, term_k, codes1, Z1, z_cols, z_vals, c_pos, xy,
                 xy_first, D1, c_indptr, c_rows, c_vals, G, row_blk_off, row_term, int q2,
                 L11, L21, S):
        self.tmpl, self.tmpl_off, self.term_k = tmpl, tmpl_off, term_k
        self.codes1, self.Z1, self.z_cols, self.z_vals = codes1, Z1, z_cols, z_vals
        self.c_pos, self.xy, self.xy_first = c_pos, xy, xy_first
        self.D1, self.c_indptr, self.c_rows, self.c_vals, self.G = D1, c_indptr, c_rows, c_vals, G
        self.row_blk_off, self.row_term, self.q2 = row_blk_off, row_term, q2
        self.p = xy.shape[1] - 1
        self.L11, self.L21, self.S = L11, L21, S
        self.Tbuf = np.empty(max(1, len(tmpl)))
        self.Abuf = np.empty(L11.shape[1] ** 2)
        self.lam = np.empty(G.shape[0])
        self.zero_beta = np.zeros(max(1, self.p))

    cdef void sum_products(self, bint xy_block) noexcept nogil:
        """D1, C and G from the current values (see ``_products``)."""
        _products(self.codes1, self.Z1, self.z_cols, self.z_vals, self.c_pos, self.xy,
                  self.xy_first, self.q2, xy_block, self.D1, self.c_vals, self.G)

    cdef void add_slot_products(self, const double[:, :, ::1] E, const double[:, ::1] shift,
                                bint has_E, bint has_shift) noexcept nogil:
        """Add a Newton step's per-observation terms (see ``_slot_products``)."""
        _slot_products(self.codes1, self.z_cols, self.c_pos, self.xy_first, self.p, self.q2,
                       E, shift, has_E, has_shift, self.D1, self.c_vals, self.G)

    cdef int refactor(self, const double[::1] theta, double* logdet) except? -2:
        """Factor at θ; writes log|L|² and returns ``_blocked_factor``'s info."""
        result = _blocked_factor(theta, self.tmpl, self.tmpl_off, self.term_k, self.D1,
                                 self.c_indptr, self.c_rows, self.c_vals, self.G,
                                 self.row_blk_off, self.row_term, self.q2, self.L11, self.L21,
                                 self.S, self.Tbuf, self.Abuf, self.lam)
        logdet[0] = result[0]
        return result[1]

    cdef void modes_into(self, double[::1] u) noexcept nogil:
        """ũ at β = 0 (a response without fixed effects, as PNLS's) into u."""
        _blocked_modes(self.L11, self.L21, self.S, self.c_indptr, self.c_rows, self.q2,
                       self.p, self.zero_beta, u)

    def products(self, bint xy_block):
        """Recompute D1, C and G from the current values (G's [X y] block only with
        ``xy_block``)."""
        self.sum_products(xy_block)

    def slot_products(self, E, shift):
        """Add per-observation matrices E (n × K × K, or None) and vectors ``shift``
        (n × K, or None) over the random-effect slots; see ``_slot_products``."""
        cdef Py_ssize_t n = self.codes1.shape[0]
        cdef int K = self.L11.shape[1] + self.z_cols.shape[1]
        cdef const double[:, :, ::1] e = E if E is not None else np.zeros((0, 0, 0))
        cdef const double[:, ::1] sh = shift if shift is not None else np.zeros((0, 0))
        if E is not None and (e.shape[0] != n or e.shape[1] != K or e.shape[2] != K):
            raise ValueError("curvature must be n × K × K over each observation's slots")
        if shift is not None and (sh.shape[0] != n or sh.shape[1] != K):
            raise ValueError("slot shift must be n × K over each observation's slots")
        self.add_slot_products(e, sh, E is not None, shift is not None)

    def factor(self, const double[::1] theta):
        """(log|L|², info, log|R_X|²) at θ; see ``_blocked_factor``."""
        return _blocked_factor(theta, self.tmpl, self.tmpl_off, self.term_k, self.D1,
                               self.c_indptr, self.c_rows, self.c_vals, self.G,
                               self.row_blk_off, self.row_term, self.q2, self.L11, self.L21,
                               self.S, self.Tbuf, self.Abuf, self.lam)


cdef void _blocked_back_solve(const double[:, :, ::1] L11, const double[:, ::1] L21,
                              const double[::1, :] S, const int[::1] c_indptr,
                              const int[::1] c_rows, int q2, double[::1] x) noexcept nogil:
    """x ← L⁻ᵀx through the blocked factor, x ordered as ``blocked_modes``' u:
    x2 ← L22⁻ᵀx2, then per level j, x1_j ← L11[j]⁻ᵀ(x1_j − L21_j'x2)."""
    cdef int nlev = L11.shape[0], k1 = L11.shape[1], j, a, c, r, pos, i
    cdef Py_ssize_t q1 = nlev * k1
    cdef double acc
    for r in range(q2 - 1, -1, -1):
        acc = x[q1 + r]
        for i in range(r + 1, q2):
            acc = acc - S[i, r] * x[q1 + i]
        x[q1 + r] = acc / S[r, r]
    for j in range(nlev):
        for pos in range(c_indptr[j], c_indptr[j + 1]):
            r = c_rows[pos]
            if r < q2:
                for a in range(k1):
                    x[j * k1 + a] = x[j * k1 + a] - L21[pos, a] * x[q1 + r]
        for a in range(k1 - 1, -1, -1):
            acc = x[j * k1 + a]
            for c in range(a + 1, k1):
                acc = acc - L11[j, c, a] * x[j * k1 + c]
            x[j * k1 + a] = acc / L11[j, a, a]


cdef void _blocked_modes(const double[:, :, ::1] L11, const double[:, ::1] L21,
                         const double[::1, :] S, const int[::1] c_indptr, const int[::1] c_rows,
                         int q2, int p, const double[::1] beta, double[::1] u) noexcept nogil:
    """ũ = L_uu⁻ᵀ(l_y − L_X'β) through the blocked factor (after a factorisation).

    ``u`` (q1 + q2) receives the first term's modes level by level, then the later
    terms'.  w = (y row) − (X rows)'β of the factor, then ``_blocked_back_solve``.
    """
    cdef int nlev = L11.shape[0], k1 = L11.shape[1], j, a, r, pos, i
    cdef Py_ssize_t q1 = nlev * k1
    cdef double acc
    for r in range(q2):
        acc = S[q2 + p, r]
        for i in range(p):
            acc = acc - S[q2 + i, r] * beta[i]
        u[q1 + r] = acc
    for j in range(nlev):
        for a in range(k1):
            u[j * k1 + a] = 0.0
        for pos in range(c_indptr[j], c_indptr[j + 1]):
            r = c_rows[pos]
            if r == q2 + p:
                for a in range(k1):
                    u[j * k1 + a] = u[j * k1 + a] + L21[pos, a]
            elif r >= q2:
                for a in range(k1):
                    u[j * k1 + a] = u[j * k1 + a] - L21[pos, a] * beta[r - q2]
    _blocked_back_solve(L11, L21, S, c_indptr, c_rows, q2, u)


def blocked_modes(const double[:, :, ::1] L11, const double[:, ::1] L21,
                  const double[::1, :] S, const int[::1] c_indptr, const int[::1] c_rows,
                  int q2, int p, const double[::1] beta, double[::1] u):
    """ũ(θ, β) into u through the blocked factor; see ``_blocked_modes``."""
    with nogil:
        _blocked_modes(L11, L21, S, c_indptr, c_rows, q2, p, beta, u)
    return u


def blocked_solve(const double[:, :, ::1] L11, const double[:, ::1] L21,
                  const double[::1, :] S, const int[::1] c_indptr, const int[::1] c_rows,
                  int q2, double[::1] x):
    """Overwrite x with A⁻¹x, A = Λ'Z'ZΛ + I = LL' through the blocked factor (after
    ``BlockedSystem.factor``); the factor's [X y] rows are not read, so the response
    stays as it is.

    x is ordered as ``blocked_modes``' u.  Forward: x1_j ← L11[j]⁻¹x1_j,
    x2 ← x2 − Σ_j L21_j x1_j, x2 ← L22⁻¹x2; then ``_blocked_back_solve``.
    """
    cdef int nlev = L11.shape[0], k1 = L11.shape[1], j, a, c, r, pos, i
    cdef Py_ssize_t q1 = nlev * k1
    cdef double acc
    if x.shape[0] != q1 + q2:
        raise ValueError(f"x has {x.shape[0]} entries; the factor has {q1 + q2} rows")
    with nogil:
        for j in range(nlev):
            for a in range(k1):
                acc = x[j * k1 + a]
                for c in range(a):
                    acc = acc - L11[j, a, c] * x[j * k1 + c]
                x[j * k1 + a] = acc / L11[j, a, a]
            for pos in range(c_indptr[j], c_indptr[j + 1]):
                r = c_rows[pos]
                if r < q2:
                    for a in range(k1):
                        x[q1 + r] = x[q1 + r] - L21[pos, a] * x[j * k1 + a]
        for r in range(q2):
            acc = x[q1 + r]
            for i in range(r):
                acc = acc - S[r, i] * x[q1 + i]
            x[q1 + r] = acc / S[r, r]
        _blocked_back_solve(L11, L21, S, c_indptr, c_rows, q2, x)
    return x


def triangular_solve(const double[:, :] A, double[::1, :] B, bint lower, bint trans):
    """Overwrite B (n × r, Fortran order) with A⁻¹B, or A⁻ᵀB when ``trans``, for A
    n × n triangular.  A may be any view whose rows are contiguous in memory or whose
    columns are (a block of a larger matrix); it is read in place, never copied.

    Returns 0, or the 1-based index of a zero diagonal entry (B is then unchanged).
    """
    cdef int n = A.shape[0], r = B.shape[1], lda, ldb = max(1, B.shape[0]), i
    cdef char side = b'L', uplo, transa, diag = b'N'
    cdef double one = 1.0
    for i in range(n):
        if A[i, i] == 0.0:
            return i + 1
    if n == 0 or r == 0:
        return 0
    if A.strides[0] == sizeof(double):        # column-major: A as it is
        lda = A.strides[1] // sizeof(double)
        uplo = b'L' if lower else b'U'
        transa = b'T' if trans else b'N'
    elif A.strides[1] == sizeof(double):      # row-major: BLAS sees A', so flip both
        lda = A.strides[0] // sizeof(double)
        uplo = b'U' if lower else b'L'
        transa = b'N' if trans else b'T'
    else:
        raise ValueError("A must have contiguous rows or columns")
    lda = max(lda, n)
    dtrsm(&side, &uplo, &transa, &diag, &n, &r, &one, <double*> &A[0, 0], &lda, &B[0, 0], &ldb)
    return 0


def magnitudes(const double[:] v):
    """(root mean square, largest magnitude) of v in one pass each, the squares summed
    unscaled where they neither overflow nor lose digits, else after scaling v by the
    power of two of its largest magnitude (exact).  (0, 0) for an empty v; with a NaN
    entry (inf, nan), with an infinite one (inf, inf)."""
    cdef Py_ssize_t n = v.shape[0], i
    cdef double top = 0.0, total = 0.0, a, unit
    cdef int e
    if n == 0:
        return 0.0, 0.0
    for i in range(n):
        a = fabs(v[i])
        if a != a:
            return INFINITY, a
        if a > top:
            top = a
    if top == 0.0 or top == INFINITY:
        return top, top
    for i in range(n):
        total += v[i] * v[i]
    if 1e-280 < total < 1e280:
        return sqrt(total / n), top
    frexp(top, &e)
    total = 0.0
    for i in range(n):
        unit = ldexp(v[i], -e)
        total += unit * unit
    return ldexp(sqrt(total / n), e), top


def pow2_column_scales(const double[:, :] M):
    """Per column j of M, D_j = 2^e with max_i |M_ij| = f·2^e, f in [0.5, 1) (2 for a
    zero column): the power of two just above the column's largest magnitude."""
    cdef Py_ssize_t n = M.shape[0], p = M.shape[1], i, j
    cdef double top
    cdef int e
    D = np.empty(p)
    cdef double[::1] d = D
    for j in range(p):
        top = 0.0
        for i in range(n):
            if fabs(M[i, j]) > top:
                top = fabs(M[i, j])
        frexp(top if top > 0.0 else 1.0, &e)
        d[j] = ldexp(1.0, e)
    return D


def scaled_qr(const double[:, :] M, bint want_q):
    """Householder QR of M D⁻¹ (D from ``pow2_column_scales``, so nothing overflows),
    for n ≥ p, by LAPACK's dgeqrf (and dorgqr for Q).

    Returns (Q or None, R, D, norms): M D⁻¹ = QR with R upper triangular and its
    diagonal made non-negative (Q's columns flipped to match), and the Euclidean
    norms of the columns of M D⁻¹.
    """
    cdef int n = M.shape[0], p = M.shape[1], i, j, info = 0, lwork
    if n < p:
        raise ValueError("scaled_qr needs at least as many rows as columns")
    D = pow2_column_scales(M)
    A = np.empty((n, p), order="F")
    R = np.zeros((p, p))
    norms = np.empty(p)
    tau = np.empty(max(1, p))
    cdef double[::1] d = D, nrm = norms, tu = tau
    cdef double[::1, :] a = A
    cdef double[:, ::1] r = R
    cdef double acc, sign
    for j in range(p):
        acc = 0.0
        for i in range(n):
            a[i, j] = M[i, j] / d[j]
            acc = acc + a[i, j] * a[i, j]
        nrm[j] = sqrt(acc)
    if p == 0:
        return (A if want_q else None), R, D, norms
    lwork = max(1, 64 * p)
    work = np.empty(lwork)
    signs = np.empty(p)
    cdef double[::1] wk = work, sg = signs
    cdef int lda = max(1, n)
    dgeqrf(&n, &p, &a[0, 0], &lda, &tu[0], &wk[0], &lwork, &info)
    for i in range(p):
        sg[i] = -1.0 if a[i, i] < 0.0 else 1.0
        for j in range(i, p):
            r[i, j] = sg[i] * a[i, j]
    if not want_q:
        return None, R, D, norms
    dorgqr(&n, &p, &p, &a[0, 0], &lda, &tu[0], &wk[0], &lwork, &info)
    for j in range(p):
        if sg[j] < 0.0:
            for i in range(n):
                a[i, j] = -a[i, j]
    return A, R, D, norms
