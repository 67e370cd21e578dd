# cython: language_level=3
"""Compiled filling of a model matrix from its columns' recipes.

Owns arithmetic only: column j of the matrix is the product of some numeric data
columns and some level indicators.  What the columns are, their names and order,
is ``linkmix.columns``'s.  Indices are checked before they are used (the module is
compiled without bounds checks).
"""

from libc.stdint cimport int64_t


def fill_columns(double[:, ::1] out, const double[:, ::1] numeric,
                 const int64_t[:, ::1] codes, const int64_t[:, ::1] col_numeric,
                 const int64_t[:, ::1] col_factor, const int64_t[:, ::1] col_level):
    """out[i, j] = Π_a numeric[col_numeric[j, a], i] · Π_b [codes[col_factor[j, b], i]
    == col_level[j, b]], the lists of column j ending at its first -1.

    ``numeric`` (m × n) holds numeric data columns, ``codes`` (c × n) each categorical
    factor's level code per row; ``out`` is n × p.
    """
    cdef Py_ssize_t n = out.shape[0], p = out.shape[1], i, j, a, f
    cdef int64_t level
    if numeric.shape[0] and numeric.shape[1] != n or codes.shape[0] and codes.shape[1] != n:
        raise ValueError("data columns and the output have different numbers of rows")
    if col_numeric.shape[0] != p or col_factor.shape[0] != p or col_level.shape[0] != p \
            or col_factor.shape[1] != col_level.shape[1]:
        raise ValueError("column recipes do not match the output's columns")
    for j in range(p):
        for a in range(col_numeric.shape[1]):
            if col_numeric[j, a] >= numeric.shape[0]:
                raise IndexError(f"column {j} reads numeric column {col_numeric[j, a]}")
        for a in range(col_factor.shape[1]):
            if col_factor[j, a] >= codes.shape[0]:
                raise IndexError(f"column {j} reads factor {col_factor[j, a]}")
    with nogil:
        for j in range(p):
            for i in range(n):
                out[i, j] = 1.0
            for a in range(col_numeric.shape[1]):
                f = col_numeric[j, a]
                if f < 0:
                    break
                for i in range(n):
                    out[i, j] *= numeric[f, i]
            for a in range(col_factor.shape[1]):
                f = col_factor[j, a]
                if f < 0:
                    break
                level = col_level[j, a]
                for i in range(n):
                    if codes[f, i] != level:
                        out[i, j] = 0.0
