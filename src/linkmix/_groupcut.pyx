# cython: language_level=3
"""Compiled cutting of one group's rows out of a whole table's design.

Owns index arithmetic only (which columns, which rows, which levels); what the
columns mean, and why these are the group's columns, is ``linkmix.groupdesign``'s.
Each function costs O(rows of the group + columns of the table), with no numpy
call per factor or per term: a batch cuts thousands of small groups.  Indices are
checked before they are used (the module is compiled without bounds checks).
"""

from libc.stdint cimport int32_t, int64_t

import numpy as np


def present_columns(const int64_t[:, ::1] codes, const int64_t[::1] sizes,
                    const int64_t[:, ::1] level, const unsigned char[:, ::1] reduced,
                    Py_ssize_t start, Py_ssize_t stop):
    """Indices of the columns the model matrix of rows ``start:stop`` alone has.

    ``codes[f, i]`` is row i's level of factor f (of ``sizes[f]``); column j
    indicates level ``level[f, j]`` of f (-1: j does not involve f), without f's
    first level where ``reduced[f, j]``.  Column j is kept when every level it
    indicates occurs in the rows, and none of them is a reduced factor's first
    level present there.
    """
    cdef Py_ssize_t n_factors = codes.shape[0], p = level.shape[1], f, i, j, offset = 0
    cdef Py_ssize_t total = 0
    for f in range(n_factors):
        total += sizes[f]
    seen_buffer = np.zeros(max(total, 1), dtype=np.uint8)
    first_buffer = np.empty(max(n_factors, 1), dtype=np.int64)
    keep_buffer = np.empty(p, dtype=np.int64)
    cdef unsigned char[::1] seen = seen_buffer
    cdef int64_t[::1] first = first_buffer, keep = keep_buffer
    cdef Py_ssize_t n_kept = 0, lev
    cdef bint ok
    if not 0 <= start <= stop <= codes.shape[1]:
        raise IndexError(f"rows {start}:{stop} outside the table's {codes.shape[1]}")
    for f in range(n_factors):
        for i in range(start, stop):
            if not 0 <= codes[f, i] < sizes[f]:
                raise ValueError(f"level code {codes[f, i]} outside 0..{sizes[f] - 1}")
            seen[offset + codes[f, i]] = 1
        first[f] = -1
        for i in range(sizes[f]):
            if seen[offset + i]:
                first[f] = i
                break
        offset += sizes[f]
    for j in range(p):
        ok = True
        offset = 0
        for f in range(n_factors):
            lev = level[f, j]
            if lev >= 0 and (not seen[offset + lev] or (reduced[f, j] and lev == first[f])):
                ok = False
                break
            offset += sizes[f]
        if ok:
            keep[n_kept] = j
            n_kept += 1
    return keep_buffer[:n_kept].copy()


def rows_dense(const int64_t[::1] indptr, const int64_t[::1] indices, const double[::1] values,
               Py_ssize_t start, Py_ssize_t stop, const int64_t[::1] columns,
               Py_ssize_t n_columns):
    """Rows ``start:stop`` of a CSR matrix (``indptr``, ``indices``, ``values``; its
    ``n_columns`` columns) restricted to ``columns``, as a dense C-order array."""
    cdef Py_ssize_t n = stop - start, k = columns.shape[0], i, e, j
    if not 0 <= start <= stop < indptr.shape[0]:
        raise IndexError(f"rows {start}:{stop} outside the matrix's {indptr.shape[0] - 1}")
    position_buffer = np.full(max(n_columns, 1), -1, dtype=np.int64)
    out_buffer = np.zeros((n, k))
    cdef int64_t[::1] position = position_buffer
    cdef double[:, ::1] out = out_buffer
    for j in range(k):
        if not 0 <= columns[j] < n_columns:
            raise ValueError(f"column {columns[j]} outside 0..{n_columns - 1}")
        position[columns[j]] = j
    for i in range(n):
        for e in range(indptr[start + i], indptr[start + i + 1]):
            j = position[indices[e]]
            if j >= 0:
                out[i, j] = values[e]
    return out_buffer


def local_codes(const int32_t[::1] codes, Py_ssize_t start, Py_ssize_t stop,
                int64_t[::1] scratch):
    """(levels, local): the sorted distinct table codes of rows ``start:stop`` and each
    row's position among them (int32), like ``np.unique(..., return_inverse=True)``.

    ``scratch`` (one entry per table level, all -1) is left as it was found, so a
    caller keeps one for every group: the cost is O(rows), not O(table levels).
    """
    cdef Py_ssize_t n = stop - start, i, m = 0
    cdef int32_t c
    found_buffer = np.empty(max(n, 1), dtype=np.int64)
    cdef int64_t[::1] found = found_buffer
    if not 0 <= start <= stop <= codes.shape[0]:
        raise IndexError(f"rows {start}:{stop} outside the table's {codes.shape[0]}")
    for i in range(start, stop):  # all checked before scratch is touched
        if not 0 <= codes[i] < scratch.shape[0]:
            raise ValueError(f"level code {codes[i]} outside 0..{scratch.shape[0] - 1}")
    for i in range(start, stop):
        c = codes[i]
        if scratch[c] < 0:
            scratch[c] = 0
            found[m] = c
            m += 1
    levels_buffer = np.sort(found_buffer[:m])
    cdef int64_t[::1] levels = levels_buffer
    for i in range(m):
        scratch[levels[i]] = i
    local_buffer = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] local = local_buffer
    for i in range(n):
        local[i] = <int32_t> scratch[codes[start + i]]
    for i in range(m):
        scratch[levels[i]] = -1
    return levels_buffer, local_buffer
