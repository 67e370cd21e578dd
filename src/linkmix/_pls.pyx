# cython: language_level=3
"""Compiled arithmetic of the penalised least-squares (PLS) deviance.

This module owns numbers only, never meaning: it maps θ to the blocks of Λ,
forms the values of Λ'Z'ZΛ + I (and its cross-products with X and y), factors
them, and returns log-determinants.  Two layouts are served:

* the *blocked* layout (``BlockedSystem``): the first random-effects term's
  block of Λ'Z'ZΛ + I is block diagonal, so it is factored level by level; the
  Schur complement of everything else (later terms, X, y) is factored by
  supernodes (``linkmix.schur``'s layout: one dense panel, or a fill-reducing
  order's), each panel by LAPACK.  This is MixedModels.jl's insight, with the
  blocks after the first factored as one sparse system.
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
from scipy.linalg.cython_blas cimport dgemm, dsymm, dsyrk, dtrmm, dtrsm
from scipy.linalg.cython_lapack cimport dgeqrf, dlauum, dorgqr, dpotrf, dpotri, dtrtri

import numpy as np

# the smallest θ_t of a scalar term whose trace comes from the diagonal of Ã⁻¹ alone
cdef double SCALAR_TRACE_MIN = 1e-2
# blocks up to this order are inverted by LAPACK's dtrtri/dpotri, larger ones by halves
cdef int INVERSE_LEAF = 64


cdef void _lower_inverse(double* A, int n, int lda) noexcept nogil:
    """A ← A⁻¹ for A lower triangular, n × n, column-major with leading dimension lda,
    by halves: [A11 0; B A22]⁻¹ = [A11⁻¹ 0; −A22⁻¹BA11⁻¹ A22⁻¹], the corner by two
    dtrmm.  (OpenBLAS's dtrtri runs at under half dtrmm's rate on orders of hundreds.)
    A's diagonal must be non-zero (a Cholesky factor's is positive)."""
    cdef int h, r, info = 0
    cdef char right = b'R', left = b'L', lower = b'L', notrans = b'N', diag = b'N'
    cdef double one = 1.0, minus = -1.0
    cdef double* A22
    if n <= INVERSE_LEAF:
        dtrtri(&lower, &diag, &n, A, &lda, &info)
        return
    h = n // 2
    r = n - h
    A22 = &A[<int64_t> h * lda + h]
    _lower_inverse(A, h, lda)
    _lower_inverse(A22, r, lda)
    dtrmm(&right, &lower, &notrans, &diag, &r, &h, &one, A, &lda, &A[h], &lda)
    dtrmm(&left, &lower, &notrans, &diag, &r, &h, &minus, A22, &lda, &A[h], &lda)


cdef void _inverse_from_factor(double* A, int n, int lda) noexcept nogil:
    """A ← (LL')⁻¹ in A's lower triangle, for L the lower Cholesky factor in A's
    (LAPACK's dpotri, whose triangular inverse ``_lower_inverse`` replaces on large
    orders): L⁻¹, then L⁻ᵀL⁻¹ (dlauum)."""
    cdef int info = 0
    cdef char lower = b'L'
    if n <= INVERSE_LEAF:
        dpotri(&lower, &n, A, &lda, &info)
        return
    _lower_inverse(A, n, lda)
    dlauum(&lower, &n, A, &lda, &info)


def inverse_from_factor(double[::1, :] L):
    """Overwrite the lower triangle of L (lower Cholesky factor of A, Fortran order)
    with that of A⁻¹, as the selected inverse does for each supernode's diagonal block."""
    if L.shape[0] != L.shape[1]:
        raise ValueError("L must be square")
    if L.shape[0]:
        with nogil:
            _inverse_from_factor(&L[0, 0], <int> L.shape[0], <int> L.shape[0])


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


cdef inline double _sym(const double* V, int nr, int c, int i, int y, int z) noexcept nogil:
    """Entry (row i + y, column c + z) of a panel, read from the lower triangle when it
    is above the diagonal (a diagonal block, i == c)."""
    if i + y >= c + z:
        return V[(c + z) * nr + i + y]
    return V[(c + y) * nr + i + z]


cdef class BlockedSystem:
    """The blocked layout, bound once: the per-observation values (term 1's covariates,
    the later terms' slots, [X y]), their θ-free sums, and the factor.

    With ``u = (u1, u2)``, term 1 owning ``u1`` and W = [Z2 X y] the rest, the
    augmented matrix Λ̃'[Z1 W]'[Z1 W]Λ̃ + I (Λ̃: Λ on the random effects, the identity
    on X and y) is ::

        [ T1'D1T1 + I      T1'C'Λ̃       ]      L11 L11' = T1'D1[j]T1 + I, per level j
        [ Λ̃'C T1        Λ̃'GΛ̃ + I_q2 ]      L21 = Λ̃'C_j T1 L11⁻ᵀ
                                               S   = Λ̃'GΛ̃ + I_q2 − Σ_j L21_j L21_j'

    where D1[j] = Σ_{i∈j} z1_i z1_i', C = W'Z1 (stored by level of term 1: ``c_rows``,
    ``c_vals``) and G = W'W.  S, the Schur complement of term 1 (m = q2 + p + 1 rows,
    X and y last), is factored by a supernodal left-looking Cholesky: its columns are
    grouped into supernodes, each a dense column-major panel of ``nr × w`` numbers
    (its w columns and every row its columns hold, ascending; the first w rows are the
    columns themselves), concatenated at ``panel_off``.  One supernode holding every
    row is the dense Schur complement; a fill-reducing order of the rows
    (``linkmix.engine``) makes several.  Every level j of term 1 and every factored
    supernode updates the supernodes its rows reach, BLAS doing the wide ones.

    G is kept in the same layout (``Gp``, lower triangle only); ``Sp`` receives the
    factor.  S's rows are in the factor's order: ``perm[r]`` is the index among the
    later terms' q2 random effects of row r (their blocks of k stay together, in
    order), and every random-effect vector in or out of ``solve``/``modes`` is in the
    terms' order.  A refactorisation passes only θ (a 16-observation model's
    evaluation costs a few μs, and checking twenty buffers would be most of it); a
    nonlinear model's PNLS (``linkmix._pnls``) rewrites the values and sums in place
    through the cdef methods.  The engine owns the arrays; rebind (construct anew)
    whenever it replaces one.
    """

    def __init__(self, tmpl, tmpl_off, term_k, codes1, Z1, z_cols, z_vals, c_pos, xy,
                 xy_first, D1, c_indptr, c_rows, c_vals, row_blk_off, row_term, int q2, perm,
                 super_first, super_rows_ptr, super_rows, panel_off, snode_of, xy_pos,
                 pair_c, pair_d, g_pos, g_entries, Gp, L11, L21, Sp):
        self.tmpl, self.tmpl_off, self.term_k = tmpl, tmpl_off, term_k
        self.codes1, self.Z1, self.z_cols, self.z_vals = codes1, Z1, z_cols, z_vals
        self.c_pos, self.xy, self.xy_first = c_pos, xy, xy_first
        self.D1, self.c_indptr, self.c_rows, self.c_vals = D1, c_indptr, c_rows, c_vals
        self.row_blk_off, self.row_term, self.q2, self.perm = row_blk_off, row_term, q2, perm
        self.super_first, self.super_rows_ptr, self.super_rows = super_first, super_rows_ptr, super_rows
        self.panel_off, self.snode_of, self.xy_pos = panel_off, snode_of, xy_pos
        self.pair_c, self.pair_d, self.g_pos = pair_c, pair_d, g_pos
        self.g_entry_J, self.g_entry_c, self.g_entry_i = g_entries
        row_k = np.ones(q2 + xy.shape[1], dtype=np.int32)
        row_k[:q2] = np.asarray(term_k)[np.asarray(row_term)[:q2]]
        self.row_k = row_k
        self.Gp, self.L11, self.L21, self.Sp = Gp, L11, L21, Sp
        self.p = xy.shape[1] - 1
        self.m = q2 + self.p + 1
        self.nsuper = super_first.shape[0] - 1
        nlev = L11.shape[0]
        self.q1 = nlev * L11.shape[1]
        self.vector_later = any(term_k[t] > 1 for t in range(1, term_k.shape[0]))
        self.Tbuf = np.empty(max(1, len(tmpl)))
        self.Abuf = np.empty(L11.shape[1] ** 2)
        self.lam = np.empty(self.m)
        self.zero_beta = np.zeros(max(1, self.p))
        self.xwork = np.empty(self.q1 + q2)
        self.envelope = np.empty(max(1, len(tmpl)))  # prss_gradient's sums, apart from
        #                                            the traces' so both may run at once
        self.rel = np.zeros(self.m, dtype=np.int32)
        self.shead = np.empty(self.nsuper, dtype=np.int32)
        self.snext = np.empty(self.nsuper, dtype=np.int32)
        self.sptr = np.empty(self.nsuper, dtype=np.int32)
        # C's pattern by row of S: the entries (and their levels) that hold each row,
        # levels ascending, so that a column of S takes its levels' updates in one pass
        rows = np.asarray(c_rows)
        levels = np.repeat(np.arange(nlev, dtype=np.int32), np.diff(np.asarray(c_indptr)))
        order = np.argsort(rows, kind="stable")
        col_ptr = np.zeros(self.m + 1, dtype=np.int32)
        col_ptr[1:] = np.cumsum(np.bincount(rows, minlength=self.m))
        self.col_ptr = col_ptr
        self.col_pos = order.astype(np.int32)
        self.col_level = levels[order]
        # the largest update one supernode makes to another: its rows below its columns,
        # squared at most
        below = (np.diff(np.asarray(super_rows_ptr)) - np.diff(np.asarray(super_first)))
        self.update_buf = np.empty(max(1, int(below.max(initial=0)) ** 2))

    # -- θ-free sums ------------------------------------------------------------------

    cdef void sum_products(self, bint xy_block) noexcept nogil:
        """The θ-free sums, in one pass over the observations.

        With observation i at level j = ``codes1[i]`` of the first term (covariates
        z1_i), later-term slots ``z_cols[i, c]`` (rows of S) holding ``z_vals[i, c]`` and
        row w_i of [X y], sets (from zero)::

            D1[j]                  = Σ z1_i z1_i'
            C[c_pos[i, c]]         = Σ z_vals[i, c] z1_i'       (later terms × term 1)
            C[xy_first[j] + r]     = Σ w_ir z1_i'               ([X y] × term 1)
            G[slot rows, lower]    = Σ z_vals[i, c] z_vals[i, d]
            G[q2 + r, z_cols[i, c]] = Σ z_vals[i, c] w_ir

        and G's [X y] block Σ w_i w_i' only with ``xy_block`` (it is left to BLAS, which
        is faster for wide X, otherwise).
        """
        cdef Py_ssize_t n = self.codes1.shape[0], i
        cdef int k1 = self.Z1.shape[1], k2 = self.z_cols.shape[1], w = self.xy.shape[1]
        cdef int npair = self.pair_c.shape[0], q2 = self.q2
        cdef int j, a, b, c, r
        cdef int64_t pos
        cdef double za, zc
        cdef double* G = &self.Gp[0]
        memset(&self.D1[0, 0, 0], 0, self.D1.shape[0] * k1 * k1 * sizeof(double))
        memset(&self.c_vals[0, 0], 0, self.c_vals.shape[0] * k1 * sizeof(double))
        memset(G, 0, self.Gp.shape[0] * sizeof(double))
        for i in range(n):
            j = self.codes1[i]
            for a in range(k1):
                za = self.Z1[i, a]
                for b in range(k1):
                    self.D1[j, a, b] += za * self.Z1[i, b]
                for c in range(k2):
                    self.c_vals[self.c_pos[i, c], a] += self.z_vals[i, c] * za
                pos = self.xy_first[j]
                for r in range(w):
                    self.c_vals[pos + r, a] += self.xy[i, r] * za
            for c in range(npair):
                G[self.g_pos[i, c]] += (self.z_vals[i, self.pair_c[c]]
                                        * self.z_vals[i, self.pair_d[c]])
            for c in range(k2):
                zc = self.z_vals[i, c]
                pos = self.xy_pos[self.z_cols[i, c]]
                for r in range(w):
                    G[pos + r] += zc * self.xy[i, r]
            if xy_block:
                for c in range(w):
                    pos = self.xy_pos[q2 + c]
                    for r in range(c, w):
                        G[pos + r] += self.xy[i, r] * self.xy[i, c]

    cdef void add_slot_products(self, const double[:, :, ::1] E, const double[:, ::1] shift,
                                bint has_E, bint has_shift) noexcept nogil:
        """Add per-observation matrices and vectors over the random-effect slots (a
        Newton step of penalised nonlinear least squares), in one pass.

        Observation i has k1 slots of term 1 (level j = ``codes1[i]``) and k2 later-term
        slots; with ``E`` (n × K × K, K = k1 + k2, symmetric; read if ``has_E``) and
        ``shift`` (n × K; read if ``has_shift``), adds::

            D1[j][a, b]            += E[i, a, b]
            C[c_pos[i, c]][a]      += E[i, k1 + c, a]
            G[slot rows c, d]      += E[i, k1 + c, k1 + d]     (lower triangle)
            C[xy_first[j] + p][a]  += shift[i, a]              (y's row of C)
            G[m − 1, z_cols[i, c]] += shift[i, k1 + c]         (y's row of G)
        """
        cdef Py_ssize_t n = self.codes1.shape[0], i
        cdef int k2 = self.z_cols.shape[1], k1 = self.D1.shape[1], p = self.p
        cdef int npair = self.pair_c.shape[0]
        cdef int j, a, b, c
        cdef double* G = &self.Gp[0]
        for i in range(n):
            j = self.codes1[i]
            if has_E:
                for a in range(k1):
                    for b in range(k1):
                        self.D1[j, a, b] += E[i, a, b]
                    for c in range(k2):
                        self.c_vals[self.c_pos[i, c], a] += E[i, k1 + c, a]
                for c in range(npair):
                    G[self.g_pos[i, c]] += E[i, k1 + self.pair_c[c], k1 + self.pair_d[c]]
            if has_shift:
                for a in range(k1):
                    self.c_vals[self.xy_first[j] + p, a] += shift[i, a]
                for c in range(k2):
                    G[self.xy_pos[self.z_cols[i, c]] + p] += shift[i, k1 + c]

    def products(self, bint xy_block):
        """Recompute D1, C and G from the current values (G's [X y] block only with
        ``xy_block``)."""
        self.sum_products(xy_block)

    def slot_products(self, E, shift):
        """Add per-observation matrices E (n × K × K, or None) and vectors ``shift``
        (n × K, or None) over the random-effect slots; see ``add_slot_products``."""
        cdef Py_ssize_t n = self.codes1.shape[0]
        cdef int K = self.L11.shape[1] + self.z_cols.shape[1]
        cdef const double[:, :, ::1] e = E if E is not None else np.zeros((0, 0, 0))
        cdef const double[:, ::1] sh = shift if shift is not None else np.zeros((0, 0))
        if E is not None and (e.shape[0] != n or e.shape[1] != K or e.shape[2] != K):
            raise ValueError("curvature must be n × K × K over each observation's slots")
        if shift is not None and (sh.shape[0] != n or sh.shape[1] != K):
            raise ValueError("slot shift must be n × K over each observation's slots")
        self.add_slot_products(e, sh, E is not None, shift is not None)

    def response_products(self, const double[::1] y, double[::1] zty):
        """The sums that involve y, for a new response: C's y row of each level j of
        term 1, Σ_{i∈j} y_i z1_i', and ``zty`` = Z2'y by row of S."""
        cdef Py_ssize_t n = self.codes1.shape[0], i
        cdef int k1 = self.Z1.shape[1], k2 = self.z_cols.shape[1], nlev = self.xy_first.shape[0]
        cdef int j, a, c, p = self.p
        with nogil:
            for j in range(nlev):
                for a in range(k1):
                    self.c_vals[self.xy_first[j] + p, a] = 0.0
            for c in range(zty.shape[0]):
                zty[c] = 0.0
            for i in range(n):
                j = self.codes1[i]
                for a in range(k1):
                    self.c_vals[self.xy_first[j] + p, a] += y[i] * self.Z1[i, a]
                for c in range(k2):
                    zty[self.z_cols[i, c]] += self.z_vals[i, c] * y[i]

    # -- factorisation ----------------------------------------------------------------

    cdef void _scaled_schur(self) noexcept nogil:
        """Sp ← Λ̃'GΛ̃ + I_q2 on each panel's lower part.  Scalar blocks of Λ̃ scale rows
        and columns (lam; 1 elsewhere); vector blocks then multiply their columns by T
        on the right and their rows by T' on the left, a block's k × k diagonal part
        made whole first (G holds its lower triangle only)."""
        cdef int J, f, w, nr, c, i, t, k, a, b, s, q2 = self.q2, m = self.m
        cdef int64_t r0
        cdef double lc, acc
        cdef double* P
        cdef const double* Gv
        cdef double* T
        cdef double* lam = &self.lam[0]
        cdef double* Tbuf = &self.Tbuf[0]
        for i in range(m):
            lam[i] = 1.0
        i = 0
        while i < q2:
            t = self.row_term[i]
            k = self.term_k[t]
            if k == 1:
                lam[i] = Tbuf[self.tmpl_off[t]]
            i = i + k
        for J in range(self.nsuper):
            f = self.super_first[J]
            w = self.super_first[J + 1] - f
            r0 = self.super_rows_ptr[J]
            nr = <int> (self.super_rows_ptr[J + 1] - r0)
            P = &self.Sp[self.panel_off[J]]
            Gv = &self.Gp[self.panel_off[J]]
            for c in range(w):
                lc = lam[f + c]
                for i in range(c, nr):
                    P[c * nr + i] = Gv[c * nr + i] * lam[self.super_rows[r0 + i]] * lc
            if self.vector_later:
                c = 0
                while c < w:  # columns: G[:, block] T, rows i ≥ the block's first
                    k = self.term_k[self.row_term[f + c]] if f + c < q2 else 1
                    if k > 1:
                        T = &Tbuf[self.tmpl_off[self.row_term[f + c]]]
                        for b in range(k):
                            for a in range(b):
                                P[(c + b) * nr + c + a] = P[(c + a) * nr + c + b]
                        for i in range(c, nr):
                            for b in range(k):
                                acc = 0.0
                                for s in range(b, k):
                                    acc = acc + P[(c + s) * nr + i] * T[s * k + b]
                                P[(c + b) * nr + i] = acc
                    c = c + k
                i = 0
                while i < nr:  # rows: T' G[block, :], columns the block reaches
                    s = self.super_rows[r0 + i]
                    k = self.term_k[self.row_term[s]] if s < q2 else 1
                    if k > 1:
                        T = &Tbuf[self.tmpl_off[self.row_term[s]]]
                        for c in range(min(w, i + k)):
                            for a in range(k):
                                acc = 0.0
                                for b in range(a, k):
                                    acc = acc + T[b * k + a] * P[c * nr + i + b]
                                P[c * nr + i + a] = acc
                    i = i + k
            for c in range(w):
                if f + c < q2:
                    P[c * nr + c] = P[c * nr + c] + 1.0

    cdef int _first_term(self, double* logdet) noexcept nogil:
        """L11[j] = chol(T1'D1[j]T1 + I) and L21_j = Λ̃'C_j T1 L11[j]⁻ᵀ for every level j
        of term 1; adds log|L11|² to logdet.  Returns 0, or -1 for a block that is not
        positive definite."""
        cdef int k1 = self.term_k[0], nlev = self.D1.shape[0], q2 = self.q2
        cdef int j, a, b, c, r, s, t, o, k, pos, start, stop
        cdef double acc
        cdef double* T1 = &self.Tbuf[0]
        cdef double* T
        cdef double* Lj
        cdef double* A = &self.Abuf[0]
        for j in range(nlev):
            Lj = &self.L11[j, 0, 0]
            for a in range(k1):
                for b in range(a + 1):
                    acc = 0.0
                    for r in range(b, k1):          # T1[r, b] nonzero for r ≥ b
                        for s in range(a, k1):      # T1[s, a] nonzero for s ≥ a
                            acc = acc + T1[r * k1 + b] * self.D1[j, r, s] * T1[s * k1 + a]
                    A[a * k1 + b] = acc + (1.0 if a == b else 0.0)
            for a in range(k1):
                for b in range(a + 1):
                    acc = A[a * k1 + b]
                    for c in range(b):
                        acc = acc - Lj[a * k1 + c] * Lj[b * k1 + c]
                    if a == b:
                        if acc <= 0.0:
                            return -1
                        Lj[a * k1 + a] = sqrt(acc)
                    else:
                        Lj[a * k1 + b] = acc / Lj[b * k1 + b]
                for b in range(a + 1, k1):
                    Lj[a * k1 + b] = 0.0
            for a in range(k1):
                logdet[0] = logdet[0] + 2.0 * log(Lj[a * k1 + a])

            start = self.c_indptr[j]
            stop = self.c_indptr[j + 1]
            # V = C_j T1
            for pos in range(start, stop):
                for b in range(k1):
                    acc = 0.0
                    for s in range(b, k1):
                        acc = acc + self.c_vals[pos, s] * T1[s * k1 + b]
                    self.L21[pos, b] = acc
            # V ← Λ̃' V on rows of later terms; rows of a block are contiguous
            # and processed upwards, so each reads only rows not yet rewritten.
            for pos in range(start, stop):
                r = self.c_rows[pos]
                if r >= q2:
                    break
                o = self.row_blk_off[r]
                t = self.row_term[r]
                k = self.term_k[t]
                T = &self.Tbuf[self.tmpl_off[t]]
                a = r - o
                for b in range(k1):
                    acc = 0.0
                    for s in range(a, k):
                        acc = acc + T[s * k + a] * self.L21[pos + s - a, b]
                    self.L21[pos, b] = acc
            # V ← V L11⁻ᵀ (forward substitution on each row)
            for pos in range(start, stop):
                for a in range(k1):
                    acc = self.L21[pos, a]
                    for c in range(a):
                        acc = acc - Lj[a * k1 + c] * self.L21[pos, c]
                    self.L21[pos, a] = acc / Lj[a * k1 + a]
        return 0

    cdef void _link(self, int* head, int* nxt, int item, int row) noexcept nogil:
        """Put ``item`` on the list of the supernode that owns column ``row``."""
        cdef int J = self.snode_of[row]
        nxt[item] = head[J]
        head[J] = item

    cdef int _schur_factor(self) noexcept nogil:
        """Factor S (assembled in Sp, without term 1's fill) in place, left-looking, one
        supernode at a time: subtract the updates of every level of term 1 and every
        earlier supernode whose rows reach its columns, then dpotrf its diagonal block
        and dtrsm the rows below.  Returns 0 or the 1-based column of S where a leading
        minor is not positive."""
        cdef int ns = self.nsuper, k1 = self.L21.shape[1]
        cdef int J, K, e, en, f, l, w, nr, i, c, r, a, i1, i2, end, mU, nU, wK, nrK, info = 0
        cdef bint dense
        cdef int64_t r0, r0K
        cdef double acc
        cdef double* P
        cdef double* PK
        cdef double* U = &self.update_buf[0]
        cdef double* V
        cdef int* rel = &self.rel[0]
        cdef const int* rows
        cdef const int* rowsK
        cdef const int* crow = &self.c_rows[0]
        cdef char uplo = b'L', side = b'R', transa = b'T', notrans = b'N', diag = b'N'
        cdef double one = 1.0, zero = 0.0
        cdef int lda, below
        cdef int* shead = &self.shead[0]
        cdef int* snext = &self.snext[0]
        for J in range(ns):
            shead[J] = -1
        for J in range(ns):
            f = self.super_first[J]
            l = self.super_first[J + 1]
            w = l - f
            r0 = self.super_rows_ptr[J]
            nr = <int> (self.super_rows_ptr[J + 1] - r0)
            rows = &self.super_rows[r0]
            P = &self.Sp[self.panel_off[J]]
            for i in range(nr):
                rel[rows[i]] = i
            V = &self.L21[0, 0]
            dense = self._contiguous_rows(J)
            for c in range(w):  # levels of term 1: S[rows, col] −= V_e V_e[col]', a column
                PK = &P[c * nr]  # at a time (its numbers stay in cache)
                for e in range(self.col_ptr[f + c], self.col_ptr[f + c + 1]):
                    i1 = self.col_pos[e]
                    end = self.c_indptr[self.col_level[e] + 1]
                    if k1 == 1:
                        acc = V[i1]
                        if dense:  # one lookup less in the loop that dominates InstEval's
                            for r in range(i1, end):
                                PK[crow[r] - f] -= V[r] * acc
                        else:
                            for r in range(i1, end):
                                PK[rel[crow[r]]] -= V[r] * acc
                    else:
                        for r in range(i1, end):
                            acc = 0.0
                            for a in range(k1):
                                acc = acc + V[r * k1 + a] * V[i1 * k1 + a]
                            PK[rel[crow[r]]] -= acc
            K = shead[J]
            while K != -1:  # earlier supernodes: S[rows, cols of J] −= L_K L_K'
                en = snext[K]
                r0K = self.super_rows_ptr[K]
                nrK = <int> (self.super_rows_ptr[K + 1] - r0K)
                rowsK = &self.super_rows[r0K]
                wK = self.super_first[K + 1] - self.super_first[K]
                PK = &self.Sp[self.panel_off[K]]
                i1 = self.sptr[K]
                i2 = i1
                while i2 < nrK and rowsK[i2] < l:
                    i2 = i2 + 1
                mU = nrK - i1
                nU = i2 - i1
                if <int64_t> mU * nU * wK <= 4096:  # too small for a BLAS call to pay
                    for c in range(nU):
                        V = &P[(rowsK[i1 + c] - f) * nr]
                        for r in range(c, mU):
                            acc = 0.0
                            for a in range(wK):
                                acc = acc + PK[a * nrK + i1 + r] * PK[a * nrK + i1 + c]
                            V[rel[rowsK[i1 + r]]] -= acc
                else:
                    # U = L_K[i1:] L_K[i1:i2]': its square top by dsyrk (the lower
                    # triangle, all that is read), the rows below by dgemm
                    dsyrk(&uplo, &notrans, &nU, &wK, &one, &PK[i1], &nrK, &zero, U, &mU)
                    below = mU - nU
                    if below > 0:
                        dgemm(&notrans, &transa, &below, &nU, &wK, &one, &PK[i2], &nrK,
                              &PK[i1], &nrK, &zero, &U[nU], &mU)
                    for c in range(nU):
                        V = &P[(rowsK[i1 + c] - f) * nr]
                        if dense:
                            for r in range(c, mU):
                                V[rowsK[i1 + r] - f] -= U[c * mU + r]
                        else:
                            for r in range(c, mU):
                                V[rel[rowsK[i1 + r]]] -= U[c * mU + r]
                self.sptr[K] = i2
                if i2 < nrK:
                    self._link(shead, snext, K, rowsK[i2])
                K = en
            lda = nr
            dpotrf(&uplo, &w, P, &lda, &info)
            if info != 0:
                return f + info
            below = nr - w
            if below > 0:
                dtrsm(&side, &uplo, &transa, &diag, &below, &w, &one, P, &lda, &P[w], &lda)
                self.sptr[J] = w
                self._link(shead, snext, J, rows[w])
        return 0

    cdef tuple _factor(self, const double[::1] theta):
        """(log|L|², info, log|R_X|²) at θ.

        info is 0 on success; otherwise the 1-based column of S whose leading minor is
        not positive (m: y lies in the span of X and Z, r² = 0), or -1 for a failed
        block of term 1.  log|L|² is set when the random effects' part was factored;
        log|R_X|² comes from the factor's X block, whose upper triangle is zeroed so that
        ``Lxy`` reads as the lower-triangular R_X'.
        """
        cdef double logdet = 0.0, logdet_x = 0.0
        cdef int info, c, r, J, q2 = self.q2, m = self.m
        cdef int64_t pos
        _fill_lambda_blocks(theta, self.tmpl, self.tmpl_off, self.term_k, self.Tbuf)
        with nogil:
            self._scaled_schur()
            info = self._first_term(&logdet)
            if info == 0:
                info = self._schur_factor()
            if info == 0 or info > q2:
                for c in range(q2):
                    logdet = logdet + 2.0 * log(self._diagonal(c))
            if info == 0:
                for c in range(q2, m - 1):
                    logdet_x = logdet_x + 2.0 * log(self._diagonal(c))
            for c in range(q2 + 1, m):  # LAPACK leaves the upper triangle as it was
                pos = self.xy_pos[c]
                for r in range(c - q2):
                    self.Sp[pos + r] = 0.0
        return logdet, info, logdet_x

    cdef double _diagonal(self, int c) noexcept nogil:
        cdef int J = self.snode_of[c]
        cdef int f = self.super_first[J]
        cdef int64_t nr = self.super_rows_ptr[J + 1] - self.super_rows_ptr[J]
        return self.Sp[self.panel_off[J] + (c - f) * nr + (c - f)]

    cdef int refactor(self, const double[::1] theta, double* logdet) except? -2:
        """Factor at θ; writes log|L|² and returns ``_factor``'s info."""
        result = self._factor(theta)
        logdet[0] = result[0]
        return result[1]

    def factor(self, const double[::1] theta):
        """(log|L|², info, log|R_X|²) at θ; see ``_factor``."""
        return self._factor(theta)

    # -- solves -----------------------------------------------------------------------

    cdef void _schur_forward(self, double* x2) noexcept nogil:
        """x2 ← L_S⁻¹x2 over the random effects' rows of S (the factor's order)."""
        cdef int J, f, w, nr, c, i, r, col, q2 = self.q2
        cdef int64_t r0
        cdef double v
        cdef double* P
        for J in range(self.nsuper):
            f = self.super_first[J]
            w = self.super_first[J + 1] - f
            r0 = self.super_rows_ptr[J]
            nr = <int> (self.super_rows_ptr[J + 1] - r0)
            P = &self.Sp[self.panel_off[J]]
            for c in range(w):
                col = f + c
                if col >= q2:
                    return
                v = x2[col] / P[c * nr + c]
                x2[col] = v
                for i in range(c + 1, nr):
                    r = self.super_rows[r0 + i]
                    if r >= q2:
                        break
                    x2[r] -= P[c * nr + i] * v

    cdef void _schur_backward(self, double* x2) noexcept nogil:
        """x2 ← L_S⁻ᵀx2 over the random effects' rows of S (the factor's order)."""
        cdef int J, f, w, nr, c, i, r, col, q2 = self.q2
        cdef int64_t r0
        cdef double acc
        cdef double* P
        for J in range(self.nsuper - 1, -1, -1):
            f = self.super_first[J]
            w = self.super_first[J + 1] - f
            r0 = self.super_rows_ptr[J]
            nr = <int> (self.super_rows_ptr[J + 1] - r0)
            P = &self.Sp[self.panel_off[J]]
            for c in range(w - 1, -1, -1):
                col = f + c
                if col >= q2:
                    continue
                acc = x2[col]
                for i in range(c + 1, nr):
                    r = self.super_rows[r0 + i]
                    if r >= q2:
                        break
                    acc = acc - P[c * nr + i] * x2[r]
                x2[col] = acc / P[c * nr + c]

    cdef void _back_solve(self, double* x) noexcept nogil:
        """x ← L⁻ᵀx through the blocked factor (x: u1 level by level, then u2 in the
        factor's order): x2 ← L_S⁻ᵀx2, then per level j,
        x1_j ← L11[j]⁻ᵀ(x1_j − L21_j'x2)."""
        cdef int nlev = self.L11.shape[0], k1 = self.L11.shape[1], j, a, c, r, pos
        cdef int q1 = self.q1, q2 = self.q2
        cdef double acc
        self._schur_backward(&x[q1])
        for j in range(nlev):
            for pos in range(self.c_indptr[j], self.c_indptr[j + 1]):
                r = self.c_rows[pos]
                if r >= q2:
                    break
                for a in range(k1):
                    x[j * k1 + a] = x[j * k1 + a] - self.L21[pos, a] * x[q1 + r]
            for a in range(k1 - 1, -1, -1):
                acc = x[j * k1 + a]
                for c in range(a + 1, k1):
                    acc = acc - self.L11[j, c, a] * x[j * k1 + c]
                x[j * k1 + a] = acc / self.L11[j, a, a]

    cdef void _to_terms(self, const double* x, double[::1] out) noexcept nogil:
        """out ← x with the later terms' part from the factor's order to the terms'."""
        cdef int i, q1 = self.q1
        for i in range(q1):
            out[i] = x[i]
        for i in range(self.q2):
            out[q1 + self.perm[i]] = x[q1 + i]

    cdef void _modes(self, const double[::1] beta, double[::1] u) noexcept nogil:
        """ũ = L_uu⁻ᵀ(l_y − L_X'β) through the blocked factor (after a factorisation),
        into u in the terms' order (``_modes_factor``, then ``_to_terms``)."""
        self._modes_factor(beta)
        self._to_terms(&self.xwork[0], u)

    cdef void _modes_factor(self, const double[::1] beta) noexcept nogil:
        """ũ into ``xwork``, the later terms' part in the factor's order:
        w = (y row) − (X rows)'β of the factor, then ``_back_solve``."""
        cdef int nlev = self.L11.shape[0], k1 = self.L11.shape[1], j, a, r, pos, i
        cdef int q1 = self.q1, q2 = self.q2, p = self.p
        cdef int64_t base
        cdef double acc
        cdef double* x = &self.xwork[0]
        for r in range(q2):
            base = self.xy_pos[r]
            acc = self.Sp[base + p]
            for i in range(p):
                acc = acc - self.Sp[base + i] * beta[i]
            x[q1 + r] = acc
        for j in range(nlev):
            for a in range(k1):
                x[j * k1 + a] = 0.0
            for pos in range(self.c_indptr[j], self.c_indptr[j + 1]):
                r = self.c_rows[pos]
                if r == q2 + p:
                    for a in range(k1):
                        x[j * k1 + a] = x[j * k1 + a] + self.L21[pos, a]
                elif r >= q2:
                    for a in range(k1):
                        x[j * k1 + a] = x[j * k1 + a] - self.L21[pos, a] * beta[r - q2]
        self._back_solve(x)

    cdef void modes_into(self, double[::1] u) noexcept nogil:
        """ũ at β = 0 (a response without fixed effects, as PNLS's) into u."""
        self._modes(self.zero_beta, u)

    def modes(self, const double[::1] beta, double[::1] u):
        """ũ(θ, β) into u (terms' order) through the blocked factor; see ``_modes``."""
        if u.shape[0] != self.q1 + self.q2:
            raise ValueError(f"u has {u.shape[0]} entries; the factor has "
                             f"{self.q1 + self.q2} rows")
        with nogil:
            self._modes(beta, u)
        return u

    def solve(self, double[::1] x):
        """Overwrite x with A⁻¹x, A = Λ'Z'ZΛ + I = LL' through the blocked factor (after
        a factorisation), x in the terms' order; the factor's [X y] rows are not read,
        so the response stays as it is.

        Forward: x1_j ← L11[j]⁻¹x1_j, x2 ← x2 − Σ_j L21_j x1_j, x2 ← L_S⁻¹x2; then
        ``_back_solve``.
        """
        cdef int nlev = self.L11.shape[0], k1 = self.L11.shape[1], j, a, c, r, pos, i
        cdef int q1 = self.q1, q2 = self.q2
        cdef double acc
        cdef double* w = &self.xwork[0]
        if x.shape[0] != q1 + q2:
            raise ValueError(f"x has {x.shape[0]} entries; the factor has {q1 + q2} rows")
        with nogil:
            for i in range(q1):
                w[i] = x[i]
            for i in range(q2):
                w[q1 + i] = x[q1 + self.perm[i]]
            for j in range(nlev):
                for a in range(k1):
                    acc = w[j * k1 + a]
                    for c in range(a):
                        acc = acc - self.L11[j, a, c] * w[j * k1 + c]
                    w[j * k1 + a] = acc / self.L11[j, a, a]
                for pos in range(self.c_indptr[j], self.c_indptr[j + 1]):
                    r = self.c_rows[pos]
                    if r >= q2:
                        break
                    for a in range(k1):
                        w[q1 + r] = w[q1 + r] - self.L21[pos, a] * w[j * k1 + a]
            self._schur_forward(&w[q1])
            self._back_solve(w)
            self._to_terms(w, x)
        return x

    # -- derivatives of log-determinants ----------------------------------------------

    cdef void _subtract_fitted(self, Py_ssize_t i, const double* U, int width,
                               double* E) noexcept nogil:
        """E[d] −= z_i'Λ̃U[:, d] for observation i and d < width, U (q × width,
        row-major) in the factor's order (both terms' parts)."""
        cdef int k1 = self.Z1.shape[1], k2 = self.z_cols.shape[1], q1 = self.q1
        cdef int j = self.codes1[i], a, b, c, d, r, o, t, k
        cdef double tv
        cdef double* T1 = &self.Tbuf[0]
        cdef double* T
        for a in range(k1):  # z1'T1 u1
            for b in range(a + 1):
                tv = self.Z1[i, a] * T1[a * k1 + b]
                for d in range(width):
                    E[d] -= tv * U[(j * k1 + b) * width + d]
        for c in range(k2):  # the later slots: z (T u) at the slot's coefficient
            r = self.z_cols[i, c]
            o = self.row_blk_off[r]
            t = self.row_term[r]
            k = self.term_k[t]
            T = &self.Tbuf[self.tmpl_off[t]]
            a = r - o
            for b in range(a + 1):
                tv = self.z_vals[i, c] * T[a * k + b]
                for d in range(width):
                    E[d] -= tv * U[(q1 + o + b) * width + d]

    cdef void _add_envelope(self, Py_ssize_t i, double eps, const double* u,
                            double* S) noexcept nogil:
        """S += eps · z_i ⊗ u over observation i's slots: for each term t, at entry
        (a, b) of its k × k block (at ``tmpl_off``), eps·z_ia·u_b of the
        level i is in."""
        cdef int k1 = self.Z1.shape[1], k2 = self.z_cols.shape[1], q1 = self.q1
        cdef int j = self.codes1[i], a, b, c, r, o, t, k
        for a in range(k1):
            for b in range(k1):
                S[a * k1 + b] += eps * self.Z1[i, a] * u[j * k1 + b]
        for c in range(k2):
            r = self.z_cols[i, c]
            o = self.row_blk_off[r]
            t = self.row_term[r]
            k = self.term_k[t]
            a = r - o
            for b in range(k):
                S[self.tmpl_off[t] + a * k + b] += eps * self.z_vals[i, c] * u[q1 + o + b]

    def prss_gradient(self, const double[::1] beta):
        """∂r²/∂θ_i at β (β̂ for the profiled r²) after a factorisation, by the envelope
        theorem: with ε = y − Xβ − ZΛũ and D_i = ∂Λ/∂θ_i, −2 ε'Z D_i ũ, from the
        engine's current values (a new response or covariates included).  Reads the
        factor and writes only ``xwork`` and its own sums: it may run on another thread
        alongside ``trace_gradient``."""
        cdef Py_ssize_t n = self.codes1.shape[0], i
        cdef int p = self.p, a
        cdef double eps
        cdef double* x = &self.xwork[0]
        cdef double* S = &self.envelope[0]
        with nogil:
            self._modes_factor(beta)
            for a in range(self.envelope.shape[0]):
                S[a] = 0.0
            for i in range(n):
                eps = self.xy[i, p]
                for a in range(p):
                    eps = eps - self.xy[i, a] * beta[a]
                self._subtract_fitted(i, x, 1, &eps)
                self._add_envelope(i, eps, x, S)
        return self._by_theta(self.envelope, -2.0)

    cdef void _column_modes(self, int col, double* x) noexcept nogil:
        """x ← A⁻¹Λ̃'Z'X_col, in the factor's order: the modes of the response X_col
        without fixed effects, from the factor's X_col row and ``_back_solve``."""
        cdef int nlev = self.L11.shape[0], k1 = self.L11.shape[1], j, a, r, pos
        cdef int q1 = self.q1, q2 = self.q2
        for r in range(q2):
            x[q1 + r] = self.Sp[self.xy_pos[r] + col]
        for j in range(nlev):
            for a in range(k1):
                x[j * k1 + a] = 0.0
            for pos in range(self.c_indptr[j], self.c_indptr[j + 1]):
                if self.c_rows[pos] == q2 + col:
                    for a in range(k1):
                        x[j * k1 + a] = self.L21[pos, a]
                    break
        self._back_solve(x)

    def column_residuals(self, double[:, ::1] U, double[:, ::1] R):
        """After a factorisation, for each column a of X: U[:, a] ← A⁻¹Λ̃'Z'X_a (the
        modes of the response X_a without fixed effects) and R[:, a] ← Z'E_a with
        E_a = X_a − ZΛ̃U[:, a]; both q × p, the random effects in the factor's order."""
        cdef Py_ssize_t n = self.codes1.shape[0], i
        cdef int p = self.p, q = self.q1 + self.q2, q1 = self.q1, k1 = self.Z1.shape[1]
        cdef int k2 = self.z_cols.shape[1], a, c, d, r, j
        cdef double z
        if U.shape[0] != q or U.shape[1] != p or R.shape[0] != q or R.shape[1] != p:
            raise ValueError("U and R must be q × p")
        columns = np.empty((max(1, p), max(1, q)))
        eps = np.empty(max(1, p))
        cdef double[:, ::1] W = columns
        cdef double[::1] E = eps
        with nogil:
            for a in range(p):
                self._column_modes(a, &W[a, 0])
            for r in range(q):
                for a in range(p):
                    U[r, a] = W[a, r]
                    R[r, a] = 0.0
            for i in range(n):
                j = self.codes1[i]
                for d in range(p):
                    E[d] = self.xy[i, d]
                self._subtract_fitted(i, &U[0, 0], p, &E[0])
                for a in range(k1):
                    z = self.Z1[i, a]
                    for d in range(p):
                        R[j * k1 + a, d] += z * E[d]
                for c in range(k2):
                    z = self.z_vals[i, c]
                    r = q1 + self.z_cols[i, c]
                    for d in range(p):
                        R[r, d] += z * E[d]

    def _by_theta(self, sums, double scale):
        """scale × the entries of ``sums`` (per term, T's layout) at their θ indices."""
        cdef int ntheta = 0, t, a, idx
        for a in range(self.tmpl.shape[0]):
            ntheta = max(ntheta, self.tmpl[a] + 1)
        out = np.zeros(ntheta)
        for t in range(self.term_k.shape[0]):
            for a in range(self.term_k[t] * self.term_k[t]):
                idx = self.tmpl[self.tmpl_off[t] + a]
                if idx >= 0:
                    out[idx] = scale * sums[self.tmpl_off[t] + a]
        return out

    def trace_gradient(self, int lim):
        """tr(Ã⁻¹ ∂Ã/∂θ_i) for every θ_i, after a factorisation at θ.

        Ã is the leading part of the augmented system up to row ``lim`` of S: the
        random effects only (``lim = q2``: Ã = A = Λ'Z'ZΛ + I, whose log|A| is ML's) or
        with X too (``lim = q2 + p``: log|Ã| = log|A| + log|R_X|², REML's).  With
        K = Ã⁻¹ and M = [Z X]'[Z X], Ã = Λ̃'MΛ̃ + I_u, and D_i = ∂Λ/∂θ_i::

            tr(K ∂Ã/∂θ_i) = 2 tr(K Λ̃' M D_i) = 2 Σ_{y,z} M_yz (Λ̃ K D_i')_yz,

        which reads K only where M is not zero: on the pattern of the factor.  K there
        is the selected inverse (``_selected_inverse``, ``_level_inverse``), and the
        sum runs block by block over the stored sums D1, C and G (``_contract``).  With
        scalar terms only, the diagonal of K is enough (``_scalar_traces``).
        """
        if lim != self.q2 and lim != self.q2 + self.p:
            raise ValueError("lim must be q2 (ML) or q2 + p (REML)")
        if not self.inverse_ready:
            self._allocate_inverse()
        with nogil:
            self._selected_inverse(lim)
            if not self._scalar_traces(lim):
                self._level_inverse(lim)
                self._contract(lim)
        return self._by_theta(self.Gt, 2.0)

    def _allocate_inverse(self):
        cdef int nlev = self.L11.shape[0], k1 = self.L11.shape[1]
        below = (np.diff(np.asarray(self.super_rows_ptr)) - np.diff(np.asarray(self.super_first)))
        widest = int(np.diff(np.asarray(self.super_first)).max(initial=1))
        most_below = int(below.max(initial=0))
        self.Kp = np.zeros(self.Sp.shape[0])
        self.K11 = np.zeros((nlev, k1, k1))
        self.K21 = np.zeros((self.L21.shape[0], k1))
        self.Ylev = np.zeros((self.L21.shape[0], k1))
        self.Kbuf = np.empty(max(1, most_below * most_below))
        self.Ybuf = np.empty(max(1, most_below * widest))
        self.Gt = np.zeros(max(1, self.tmpl.shape[0]))
        self.inverse_ready = True

    cdef void _rel_map(self, int J) noexcept nogil:
        """rel[row] = the row's place in supernode J's rows."""
        cdef int64_t r0 = self.super_rows_ptr[J], i
        for i in range(self.super_rows_ptr[J + 1] - r0):
            self.rel[self.super_rows[r0 + i]] = <int> i

    cdef bint _contiguous_rows(self, int J) noexcept nogil:
        """Whether supernode J's rows are f, f + 1, … (its first column f on): a row's
        place in them is then row − f, without ``rel`` (InstEval's dense root)."""
        cdef int64_t r0 = self.super_rows_ptr[J], r1 = self.super_rows_ptr[J + 1]
        return self.super_rows[r1 - 1] - self.super_first[J] == r1 - r0 - 1

    cdef void _selected_inverse(self, int lim) noexcept nogil:
        """K_S = S_lim⁻¹ on the pattern of its factor (S_lim: S's leading ``lim`` rows,
        the block of Ã⁻¹ over the later terms (and X)), into ``Kp`` in Sp's layout.

        Takahashi's recurrences, one supernode at a time from the last: with F its
        columns and R the rows below them, Y = L_RF L_FF⁻¹, K_RF = −K_RR Y and
        K_FF = (L_FF L_FF')⁻¹ − Y'K_RF; K_RR lies in later supernodes' panels (the
        rows of R meet in the factor's pattern)."""
        cdef int ns = self.nsuper, m = self.m, J, J2, cur, f, f2, w, wl, nr, nr2, nrl, nR
        cdef int i, c, c1, c2, r2
        cdef int64_t r0, base
        cdef const int* rows
        cdef double* P
        cdef double* Q
        cdef double* Q2 = NULL
        cdef double* Y = &self.Ybuf[0]
        cdef double* Kb = &self.Kbuf[0]
        cdef int* rel = &self.rel[0]
        cdef char side = b'R', left = b'L', lower = b'L', notrans = b'N', trans = b'T', diag = b'N'
        cdef double one = 1.0, minus = -1.0, zero = 0.0
        for J in range(ns - 1, -1, -1):
            f = self.super_first[J]
            w = self.super_first[J + 1] - f
            wl = min(w, lim - f)
            if wl <= 0:
                continue
            r0 = self.super_rows_ptr[J]
            nr = <int> (self.super_rows_ptr[J + 1] - r0)
            rows = &self.super_rows[r0]
            nrl = nr - (m - lim)
            nR = nrl - wl
            P = &self.Sp[self.panel_off[J]]
            Q = &self.Kp[self.panel_off[J]]
            if nR > 0:
                for c in range(wl):
                    for i in range(nR):
                        Y[c * nR + i] = P[c * nr + wl + i]
                dtrsm(&side, &lower, &notrans, &diag, &nR, &wl, &one, P, &nr, Y, &nR)
                cur = -1
                for c2 in range(nR):
                    r2 = rows[wl + c2]
                    J2 = self.snode_of[r2]
                    if J2 != cur:
                        self._rel_map(J2)
                        cur = J2
                        f2 = self.super_first[J2]
                        nr2 = <int> (self.super_rows_ptr[J2 + 1] - self.super_rows_ptr[J2])
                        Q2 = &self.Kp[self.panel_off[J2]]
                    base = <int64_t> (r2 - f2) * nr2
                    for c1 in range(c2, nR):
                        Kb[c2 * nR + c1] = Q2[base + rel[rows[wl + c1]]]
                dsymm(&left, &lower, &nR, &wl, &minus, Kb, &nR, Y, &nR, &zero, &Q[wl], &nr)
            for c in range(wl):
                for i in range(c, wl):
                    Q[c * nr + i] = P[c * nr + i]
            _inverse_from_factor(Q, wl, nr)
            if nR > 0:
                dgemm(&trans, &notrans, &wl, &wl, &nR, &minus, Y, &nR, &Q[wl], &nr, &one, Q,
                      &nr)

    cdef void _level_Y(self, int trim) noexcept nogil:
        """Ylev ← Y_j = L21_j L11[j]⁻¹ for every level j (its rows but the last ``trim``):
        each row y solves y L11[j]' = v (back substitution on L11[j]')."""
        cdef int k1 = self.L11.shape[1], e, pos, a, c
        cdef double acc
        cdef double* Lj
        for e in range(self.L11.shape[0]):
            Lj = &self.L11[e, 0, 0]
            for pos in range(self.c_indptr[e], self.c_indptr[e + 1] - trim):
                for a in range(k1 - 1, -1, -1):
                    acc = self.L21[pos, a]
                    for c in range(a + 1, k1):
                        acc = acc - self.Ylev[pos, c] * Lj[c * k1 + a]
                    self.Ylev[pos, a] = acc / Lj[a * k1 + a]

    cdef bint _scalar_traces(self, int lim) noexcept nogil:
        """For scalar terms only, each θ_t at least ``SCALAR_TRACE_MIN``: Gt[t's entry] ←
        (q_t − tr_t(Ã⁻¹))/θ_t, so that 2·Gt is tr(Ã⁻¹∂Ã/∂θ_t) (∂Λ/∂θ_t = ΛE_t/θ_t and
        Λ̃'MΛ̃ = Ã − I_u give tr(Ã⁻¹∂Ã/∂θ_t) = 2 tr(Ã⁻¹(Ã − I_u)E_t)/θ_t).  Only the
        diagonal of Ã⁻¹ is read: K_S's from the selected inverse and, per level j of
        term 1, 1/L11_j² + Y_j'K_S[R_j, R_j]Y_j, a column of K_S at a time with nothing
        written; ``_level_inverse`` and ``_contract`` are not needed.  False (Gt not
        written) otherwise; below the bound q_t − tr_t cancels (it is O(θ_t²))."""
        cdef int nt = self.term_k.shape[0], m = self.m, q2 = self.q2, trim = m - lim
        cdef int nlev = self.L11.shape[0], t, e, J, f, w, nr, c, cc, rr, end, r
        cdef bint dense
        cdef double total, kv, y, side
        cdef double* Q
        cdef const int* crow = &self.c_rows[0]
        cdef const int* rel = &self.rel[0]
        cdef const double* Yv = &self.Ylev[0, 0]
        cdef double* G = &self.Gt[0]
        for t in range(nt):
            if self.term_k[t] != 1 or fabs(self.Tbuf[self.tmpl_off[t]]) < SCALAR_TRACE_MIN:
                return False
        self._level_Y(trim)
        total = 0.0
        for e in range(nlev):
            total = total + 1.0 / (self.L11[e, 0, 0] * self.L11[e, 0, 0])
        for J in range(self.nsuper):
            f = self.super_first[J]
            w = min(self.super_first[J + 1], lim) - f
            if w <= 0:
                continue
            nr = <int> (self.super_rows_ptr[J + 1] - self.super_rows_ptr[J])
            self._rel_map(J)
            dense = self._contiguous_rows(J)
            for c in range(w):
                Q = &self.Kp[self.panel_off[J] + <int64_t> c * nr]
                for e in range(self.col_ptr[f + c], self.col_ptr[f + c + 1]):
                    cc = self.col_pos[e]
                    end = self.c_indptr[self.col_level[e] + 1] - trim
                    y = Yv[cc]
                    side = 0.0
                    if dense:
                        for rr in range(cc + 1, end):
                            side = side + Q[crow[rr] - f] * Yv[rr]
                    else:
                        for rr in range(cc + 1, end):
                            side = side + Q[rel[crow[rr]]] * Yv[rr]
                    total = total + y * (Q[rel[crow[cc]]] * y + 2.0 * side)
        for t in range(nt):
            G[self.tmpl_off[t]] = 0.0
        G[self.tmpl_off[0]] = nlev - total
        for r in range(q2):
            J = self.snode_of[r]
            f = self.super_first[J]
            nr = <int> (self.super_rows_ptr[J + 1] - self.super_rows_ptr[J])
            t = self.row_term[r]
            G[self.tmpl_off[t]] += 1.0 - self.Kp[self.panel_off[J] + <int64_t> (r - f) * (nr + 1)]
        for t in range(nt):
            G[self.tmpl_off[t]] /= self.Tbuf[self.tmpl_off[t]]
        return True

    cdef void _level_inverse(self, int lim) noexcept nogil:
        """The first term's blocks of Ã⁻¹: with Y_j = L21_j L11[j]⁻¹ (rows of level j
        below ``lim``), K21_j = −K_S[R_j, R_j] Y_j and K11_j = (L11[j]L11[j]')⁻¹ − Y_j'K21_j.
        K_S[R_j, R_j] is read a column at a time, each column's levels through C's
        pattern by row (``col_ptr``; as ``_schur_factor`` fills them)."""
        cdef int ns = self.nsuper, m = self.m, k1 = self.L11.shape[1], nlev = self.L11.shape[0]
        cdef int trim = m - lim, J, e, f, w, nr, end, cc, rr, a, b, c, pos
        cdef double kv, acc, own
        cdef double* Q
        cdef const int* crow = &self.c_rows[0]
        cdef int* rel = &self.rel[0]
        cdef double* K2 = &self.K21[0, 0]
        cdef const double* Yv = &self.Ylev[0, 0]
        cdef double* Lj
        self._level_Y(trim)
        for pos in range(self.c_indptr[nlev]):
            for a in range(k1):
                self.K21[pos, a] = 0.0
        for J in range(ns):
            f = self.super_first[J]
            w = min(self.super_first[J + 1], lim) - f
            if w <= 0:
                continue
            nr = <int> (self.super_rows_ptr[J + 1] - self.super_rows_ptr[J])
            self._rel_map(J)
            for c in range(w):  # a column of K_S at a time, as _schur_factor
                Q = &self.Kp[self.panel_off[J] + <int64_t> c * nr]
                for e in range(self.col_ptr[f + c], self.col_ptr[f + c + 1]):
                    cc = self.col_pos[e]
                    end = self.c_indptr[self.col_level[e] + 1] - trim
                    if k1 == 1:  # the common case, without the inner loops
                        acc = Yv[cc]
                        kv = Q[rel[crow[cc]]]
                        own = -kv * acc
                        for rr in range(cc + 1, end):
                            kv = Q[rel[crow[rr]]]
                            K2[rr] -= kv * acc
                            own = own - kv * Yv[rr]
                        K2[cc] += own
                        continue
                    for rr in range(cc, end):
                        kv = Q[rel[crow[rr]]]
                        for a in range(k1):
                            K2[rr * k1 + a] -= kv * Yv[cc * k1 + a]
                        if rr != cc:
                            for a in range(k1):
                                K2[cc * k1 + a] -= kv * Yv[rr * k1 + a]
        for e in range(nlev):
            Lj = &self.L11[e, 0, 0]
            # (L L')⁻¹ = L⁻ᵀL⁻¹, L⁻¹ by forward substitution into K11 (lower), then
            # the product, then − Y'K21
            for b in range(k1):
                for a in range(k1):
                    if a < b:
                        self.Abuf[a * k1 + b] = 0.0
                        continue
                    acc = 1.0 if a == b else 0.0
                    for c in range(b, a):
                        acc = acc - Lj[a * k1 + c] * self.Abuf[c * k1 + b]
                    self.Abuf[a * k1 + b] = acc / Lj[a * k1 + a]
            for a in range(k1):
                for b in range(k1):
                    acc = 0.0
                    for c in range(max(a, b), k1):
                        acc = acc + self.Abuf[c * k1 + a] * self.Abuf[c * k1 + b]
                    for pos in range(self.c_indptr[e], self.c_indptr[e + 1] - trim):
                        acc = acc - self.Ylev[pos, a] * self.K21[pos, b]
                    self.K11[e, a, b] = acc

    cdef void _contract(self, int lim) noexcept nogil:
        """Gt[t] = Σ over blocks (y, z) of M with z in term t of M_yz' T_y K_yz (k_t × k_t,
        row-major at ``tmpl_off[t]``; T_y = I for X's rows): the term-1 blocks D1 and K11,
        C and K21 (both ways), and G and K_S on S's panels (both ways off the diagonal),
        over G's blocks that can be non-zero (``g_entry_*``: the observations' slot pairs
        and X's rows; the fill is zero in G).  Reads ``lam`` as the factorisation left
        it."""
        cdef int m = self.m, q2 = self.q2, k1 = self.L11.shape[1]
        cdef int nlev = self.L11.shape[0], trim = m - lim
        cdef int e, pos, end, r, ky, kz, ty, tz, a, b, c, d, J, nr, i, col
        cdef double acc, mv, kv
        cdef double* G = &self.Gt[0]
        cdef double* T1 = &self.Tbuf[0]
        cdef double* Ty
        cdef double* Tz
        cdef double* Mv
        cdef double* Kv
        cdef double one = 1.0
        for a in range(self.Gt.shape[0]):
            G[a] = 0.0
        for e in range(nlev):  # term 1's own blocks: D1 T1 K11
            for a in range(k1):
                for b in range(k1):
                    acc = 0.0
                    for c in range(k1):
                        for d in range(c + 1):  # T1 lower
                            acc = acc + self.D1[e, a, c] * T1[c * k1 + d] * self.K11[e, d, b]
                    G[a * k1 + b] += acc
            pos = self.c_indptr[e]
            end = self.c_indptr[e + 1] - trim
            while pos < end:  # C: later rows (or X) with level e, both ways
                r = self.c_rows[pos]
                ky = self.row_k[r]
                ty = self.row_term[r] if r < q2 else -1
                Ty = &self.Tbuf[self.tmpl_off[ty]] if ty >= 0 else &one
                for a in range(k1):      # G_1 += M' T_y K
                    for b in range(k1):
                        acc = 0.0
                        for c in range(ky):
                            for d in range(c + 1):
                                acc = acc + self.c_vals[pos + c, a] * Ty[c * ky + d] * self.K21[pos + d, b]
                        G[a * k1 + b] += acc
                if ty >= 0:              # G_ty += M T_1 K'
                    for a in range(ky):
                        for b in range(ky):
                            acc = 0.0
                            for c in range(k1):
                                for d in range(c + 1):
                                    acc = acc + self.c_vals[pos + a, c] * T1[c * k1 + d] * self.K21[pos + b, d]
                            G[self.tmpl_off[ty] + a * ky + b] += acc
                pos = pos + ky
        for e in range(self.g_entry_J.shape[0]):  # S's panels where G is not zero
            J = self.g_entry_J[e]
            c = self.g_entry_c[e]
            i = self.g_entry_i[e]
            nr = <int> (self.super_rows_ptr[J + 1] - self.super_rows_ptr[J])
            if i >= nr - trim:
                continue  # X's rows, for ML
            col = self.super_first[J] + c
            r = self.super_rows[self.super_rows_ptr[J] + i]
            kz = self.row_k[col]
            ky = self.row_k[r]
            tz = self.row_term[col]
            ty = self.row_term[r] if r < q2 else -1
            Mv = &self.Gp[self.panel_off[J]]
            Kv = &self.Kp[self.panel_off[J]]
            if ky == 1 and kz == 1:
                mv = Mv[c * nr + i] * Kv[c * nr + i]
                G[self.tmpl_off[tz]] += mv * self.lam[r]
                if i != c and ty >= 0:
                    G[self.tmpl_off[ty]] += mv * self.lam[col]
            else:
                Tz = &self.Tbuf[self.tmpl_off[tz]]
                Ty = &self.Tbuf[self.tmpl_off[ty]] if ty >= 0 else &one
                self._contract_block(Mv, Kv, nr, c, i, kz, ky, Ty, Tz, tz, ty)

    cdef void _contract_block(self, const double* Mv, const double* Kv, int nr, int c, int i,
                              int kz, int ky, const double* Ty, const double* Tz, int tz,
                              int ty) noexcept nogil:
        """``_contract`` for one block (rows i.., columns c.. of a panel) wider than a
        scalar: G_tz += M'T_yK and, off the diagonal, G_ty += M T_z K'; a diagonal block
        (i == c) is read symmetrically from its lower triangle."""
        cdef int a, b, y, x
        cdef double acc
        cdef double* G = &self.Gt[0]
        for a in range(kz):
            for b in range(kz):
                acc = 0.0
                for y in range(ky):
                    for x in range(y + 1):
                        acc = acc + (_sym(Mv, nr, c, i, y, a) * Ty[y * ky + x]
                                     * _sym(Kv, nr, c, i, x, b))
                G[self.tmpl_off[tz] + a * kz + b] += acc
        if i == c or ty < 0:
            return
        for a in range(ky):
            for b in range(ky):
                acc = 0.0
                for y in range(kz):
                    for x in range(y + 1):
                        acc = acc + Mv[(c + y) * nr + i + a] * Tz[y * kz + x] * Kv[(c + x) * nr + i + b]
                G[self.tmpl_off[ty] + a * ky + b] += acc


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
