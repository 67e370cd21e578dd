# cython: language_level=3
# What linkmix._pnls (compiled PNLS) reads of linkmix._pls: the blocked system's
# buffers and the methods that refill and refactor them, and θ → the blocks of Λ.

from libc.stdint cimport int64_t


cdef void _fill_lambda_blocks(const double[::1] theta, const int[::1] tmpl,
                              const int[::1] tmpl_off, const int[::1] term_k,
                              double[::1] out) noexcept nogil


cdef class BlockedSystem:
    # Λ's template and the layout of the sums
    cdef const int[::1] tmpl, tmpl_off, term_k, c_indptr, c_rows, row_blk_off, row_term
    cdef int q2, p
    # per-observation values: term 1's covariates, the later terms' slots, [X y]
    cdef const int64_t[::1] codes1, xy_first
    cdef const int64_t[:, ::1] z_cols, c_pos
    cdef double[:, ::1] Z1, z_vals, xy
    # their θ-free sums, and the factor
    cdef double[:, :, ::1] D1
    cdef double[:, ::1] c_vals
    cdef double[::1, :] G
    cdef double[:, :, ::1] L11
    cdef double[:, ::1] L21
    cdef double[::1, :] S
    # work space
    cdef double[::1] Tbuf, Abuf, lam, zero_beta

    cdef void sum_products(self, bint xy_block) noexcept nogil
    cdef void add_slot_products(self, const double[:, :, ::1] E, const double[:, ::1] shift,
                                bint has_E, bint has_shift) noexcept nogil
    cdef int refactor(self, const double[::1] theta, double* logdet) except? -2
    cdef void modes_into(self, double[::1] u) noexcept nogil
