# cython: language_level=3
# What linkmix._pnls (compiled PNLS) reads of linkmix._pls: the blocked system's
# buffers and the methods that refill and refactor them, and θ → the blocks of Λ.

from libc.stdint cimport int64_t


cdef void _fill_lambda_blocks(const double[::1] theta, const int[::1] tmpl,
                              const int[::1] tmpl_off, const int[::1] term_k,
                              double[::1] out) noexcept nogil


cdef class BlockedSystem:
    # Λ's template and the layout of the sums (rows of S in the factor's order)
    cdef const int[::1] tmpl, tmpl_off, term_k, c_indptr, c_rows, row_blk_off, row_term, perm
    cdef int q1, q2, p, m, nsuper
    cdef bint vector_later
    # the supernodes of S: columns, rows, panels, and where [X y]'s rows and the later
    # terms' slot pairs of each observation sit in them
    cdef const int[::1] super_first, super_rows, snode_of, pair_c, pair_d
    cdef const int64_t[::1] super_rows_ptr, panel_off, xy_pos
    cdef const int64_t[:, ::1] g_pos
    # the blocks of S's panels where G can be non-zero: supernode, column and row (each
    # block's first), and every row's block size
    cdef const int[::1] g_entry_J, g_entry_c, g_entry_i, row_k
    # per-observation values: term 1's covariates, the later terms' slots, [X y]
    cdef const int64_t[::1] codes1, xy_first
    cdef const int64_t[:, ::1] z_cols, c_pos
    cdef double[:, ::1] Z1, z_vals, xy
    # their θ-free sums (G in S's panels), and the factor
    cdef double[:, :, ::1] D1
    cdef double[:, ::1] c_vals
    cdef double[::1] Gp
    cdef double[:, :, ::1] L11
    cdef double[:, ::1] L21
    cdef double[::1] Sp
    # work space
    cdef double[::1] Tbuf, Abuf, lam, zero_beta, xwork, update_buf, envelope
    cdef int[::1] rel, shead, snext, sptr
    # C's pattern by row of S: where each row's entries sit, and their levels
    cdef int[::1] col_ptr, col_pos, col_level
    # the selected inverse (made on the first gradient) and the traces by term
    cdef bint inverse_ready
    cdef double[::1] Kp, Kbuf, Ybuf, Gt
    cdef double[:, ::1] K21, Ylev
    cdef double[:, :, ::1] K11

    cdef void sum_products(self, bint xy_block) noexcept nogil
    cdef void add_slot_products(self, const double[:, :, ::1] E, const double[:, ::1] shift,
                                bint has_E, bint has_shift) noexcept nogil
    cdef void _scaled_schur(self) noexcept nogil
    cdef int _first_term(self, double* logdet) noexcept nogil
    cdef void _link(self, int* head, int* nxt, int item, int row) noexcept nogil
    cdef int _schur_factor(self) noexcept nogil
    cdef tuple _factor(self, const double[::1] theta)
    cdef double _diagonal(self, int c) noexcept nogil
    cdef int refactor(self, const double[::1] theta, double* logdet) except? -2
    cdef void _schur_forward(self, double* x2) noexcept nogil
    cdef void _schur_backward(self, double* x2) noexcept nogil
    cdef void _back_solve(self, double* x) noexcept nogil
    cdef void _to_terms(self, const double* x, double[::1] out) noexcept nogil
    cdef void _modes(self, const double[::1] beta, double[::1] u) noexcept nogil
    cdef void _modes_factor(self, const double[::1] beta) noexcept nogil
    cdef void modes_into(self, double[::1] u) noexcept nogil
    cdef void _subtract_fitted(self, Py_ssize_t i, const double* U, int width,
                               double* E) noexcept nogil
    cdef void _add_envelope(self, Py_ssize_t i, double eps, const double* u,
                            double* S) noexcept nogil
    cdef void _column_modes(self, int col, double* x) noexcept nogil
    cdef void _rel_map(self, int J) noexcept nogil
    cdef bint _contiguous_rows(self, int J) noexcept nogil
    cdef void _selected_inverse(self, int lim) noexcept nogil
    cdef void _level_Y(self, int trim) noexcept nogil
    cdef bint _scalar_traces(self, int lim) noexcept nogil
    cdef void _level_inverse(self, int lim) noexcept nogil
    cdef void _contract(self, int lim) noexcept nogil
    cdef void _contract_block(self, const double* Mv, const double* Kv, int nr, int c, int i,
                              int kz, int ky, const double* Ty, const double* Tz, int tz,
                              int ty) noexcept nogil
