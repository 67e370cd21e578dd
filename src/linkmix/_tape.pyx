# cython: language_level=3
"""Compiled evaluation of an expression's tape: value, gradient and Hessian.

Owns arithmetic only.  A tape (``linkmix.tape``) is a straight-line program, one
instruction per node, children before parents; this module runs it in forward mode
with second-order derivatives in the d parameters: per node its value v, gradient g
and Hessian H, by the chain rule (for a function f of one node u,
g = f'(u)·g_u and H = f''(u)·g_u g_u' + f'(u)·H_u).  Nodes that read no data column
are evaluated once; the others once per data row.  Indices are checked before they
are used (the module is compiled without bounds checks).
"""

from libc.math cimport (atan, cos, exp, expm1, fabs, floor, isnan, log, log1p, pow, sin, sqrt,
                        tan, tanh)

import numpy as np

# opcodes: linkmix.tape.OPCODES lists the same names in the same order
cdef enum:
    CONST = 0
    PARAM = 1
    COLUMN = 2
    ADD = 3
    SUB = 4
    MUL = 5
    DIV = 6
    POWC = 7
    CPOW = 8
    MOD = 9
    NEG = 10
    EXP = 11
    LOG = 12
    LOG2 = 13
    LOG10 = 14
    LOG1P = 15
    EXPM1 = 16
    SQRT = 17
    ABS = 18
    SIN = 19
    COS = 20
    TAN = 21
    TANH = 22
    ARCTAN = 23
    EXPIT = 24
    LOGIT = 25
    WHERE = 26
    MINIMUM = 27
    MAXIMUM = 28
    EQ = 29
    NE = 30
    LT = 31
    LE = 32
    GT = 33
    GE = 34
    N_OPCODES = 35

cdef double LN2 = 0.6931471805599453
cdef double LN10 = 2.302585092994046


cdef inline void _chain(double[::1] v, double[:, ::1] g, double[:, :, ::1] H, int node,
                        int u, double value, double first, double second,
                        int d) noexcept nogil:
    cdef int a, b
    v[node] = value
    for a in range(d):
        g[node, a] = first * g[u, a]
    for a in range(d):
        for b in range(d):
            H[node, a, b] = second * g[u, a] * g[u, b] + first * H[u, a, b]


cdef inline void _copy(double[::1] v, double[:, ::1] g, double[:, :, ::1] H, int node, int u,
                       int d) noexcept nogil:
    cdef int a, b
    v[node] = v[u]
    for a in range(d):
        g[node, a] = g[u, a]
        for b in range(d):
            H[node, a, b] = H[u, a, b]


cdef inline void _zero(double[::1] v, double[:, ::1] g, double[:, :, ::1] H, int node,
                       double value, int d) noexcept nogil:
    cdef int a, b
    v[node] = value
    for a in range(d):
        g[node, a] = 0.0
        for b in range(d):
            H[node, a, b] = 0.0


cdef void _run(const int[:, ::1] code, const double[::1] consts,
               const double[:, ::1] columns, const double[::1] params, int row,
               const unsigned char[::1] varies, bint varying,
               double[::1] v, double[:, ::1] g, double[:, :, ::1] H, int d) noexcept nogil:
    """Evaluate the nodes whose ``varies`` flag equals ``varying`` at data row ``row``."""
    cdef int node, op, x, y, a, b
    cdef double u, w, f, k
    for node in range(code.shape[0]):
        if (varies[node] != 0) != varying:
            continue
        op = code[node, 0]
        x = code[node, 1]
        y = code[node, 2]
        if op == CONST:
            _zero(v, g, H, node, consts[x], d)
        elif op == PARAM:
            _zero(v, g, H, node, params[x], d)
            g[node, x] = 1.0
        elif op == COLUMN:
            _zero(v, g, H, node, columns[x, row], d)
        elif op == ADD or op == SUB:
            k = 1.0 if op == ADD else -1.0
            v[node] = v[x] + k * v[y]
            for a in range(d):
                g[node, a] = g[x, a] + k * g[y, a]
                for b in range(d):
                    H[node, a, b] = H[x, a, b] + k * H[y, a, b]
        elif op == MUL:
            v[node] = v[x] * v[y]
            for a in range(d):
                g[node, a] = g[x, a] * v[y] + g[y, a] * v[x]
            for a in range(d):
                for b in range(d):
                    H[node, a, b] = (H[x, a, b] * v[y] + H[y, a, b] * v[x]
                                     + g[x, a] * g[y, b] + g[y, a] * g[x, b])
        elif op == DIV:
            # f·y = x: f_a = (x_a − f y_a)/y, f_ab = (x_ab − f y_ab − f_a y_b − f_b y_a)/y
            w = v[y]
            f = v[x] / w
            v[node] = f
            for a in range(d):
                g[node, a] = (g[x, a] - f * g[y, a]) / w
            for a in range(d):
                for b in range(d):
                    H[node, a, b] = (H[x, a, b] - f * H[y, a, b] - g[node, a] * g[y, b]
                                     - g[node, b] * g[y, a]) / w
        elif op == POWC:
            u = v[x]
            k = v[y]
            _chain(v, g, H, node, x, pow(u, k), k * pow(u, k - 1.0),
                   k * (k - 1.0) * pow(u, k - 2.0), d)
        elif op == CPOW:
            k = v[x]
            f = pow(k, v[y])
            w = log(k)
            _chain(v, g, H, node, y, f, f * w, f * w * w, d)
        elif op == MOD:
            k = floor(v[x] / v[y])
            v[node] = v[x] - v[y] * k
            for a in range(d):
                g[node, a] = g[x, a] - k * g[y, a]
                for b in range(d):
                    H[node, a, b] = H[x, a, b] - k * H[y, a, b]
        elif op == NEG:
            v[node] = -v[x]
            for a in range(d):
                g[node, a] = -g[x, a]
                for b in range(d):
                    H[node, a, b] = -H[x, a, b]
        elif op == EXP:
            f = exp(v[x])
            _chain(v, g, H, node, x, f, f, f, d)
        elif op == LOG:
            u = v[x]
            _chain(v, g, H, node, x, log(u), 1.0 / u, -1.0 / (u * u), d)
        elif op == LOG2:
            u = v[x]
            _chain(v, g, H, node, x, log(u) / LN2, 1.0 / (u * LN2), -1.0 / (u * u * LN2), d)
        elif op == LOG10:
            u = v[x]
            _chain(v, g, H, node, x, log(u) / LN10, 1.0 / (u * LN10), -1.0 / (u * u * LN10), d)
        elif op == LOG1P:
            u = v[x]
            _chain(v, g, H, node, x, log1p(u), 1.0 / (1.0 + u), -1.0 / ((1.0 + u) * (1.0 + u)), d)
        elif op == EXPM1:
            u = v[x]
            _chain(v, g, H, node, x, expm1(u), exp(u), exp(u), d)
        elif op == SQRT:
            u = v[x]
            f = sqrt(u)
            _chain(v, g, H, node, x, f, 0.5 / f, -0.25 / (u * f), d)
        elif op == ABS:
            u = v[x]
            _chain(v, g, H, node, x, fabs(u), (u > 0) - (u < 0), 0.0, d)
        elif op == SIN:
            u = v[x]
            _chain(v, g, H, node, x, sin(u), cos(u), -sin(u), d)
        elif op == COS:
            u = v[x]
            _chain(v, g, H, node, x, cos(u), -sin(u), -cos(u), d)
        elif op == TAN:
            u = v[x]
            f = tan(u)
            w = 1.0 / (cos(u) * cos(u))
            _chain(v, g, H, node, x, f, w, 2.0 * f * w, d)
        elif op == TANH:
            f = tanh(v[x])
            _chain(v, g, H, node, x, f, 1.0 - f * f, -2.0 * f * (1.0 - f * f), d)
        elif op == ARCTAN:
            u = v[x]
            w = 1.0 / (1.0 + u * u)
            _chain(v, g, H, node, x, atan(u), w, -2.0 * u * w * w, d)
        elif op == EXPIT:
            u = v[x]
            f = 1.0 / (1.0 + exp(-u)) if u >= 0 else exp(u) / (1.0 + exp(u))
            _chain(v, g, H, node, x, f, f * (1.0 - f), f * (1.0 - f) * (1.0 - 2.0 * f), d)
        elif op == LOGIT:
            u = v[x]
            w = u * (1.0 - u)
            _chain(v, g, H, node, x, log(u / (1.0 - u)), 1.0 / w, (2.0 * u - 1.0) / (w * w), d)
        elif op == WHERE:
            _copy(v, g, H, node, y if v[x] != 0.0 else code[node, 3], d)
        elif op == MINIMUM:
            _copy(v, g, H, node, x if v[x] <= v[y] else y, d)
        elif op == MAXIMUM:
            _copy(v, g, H, node, x if v[x] >= v[y] else y, d)
        elif op == EQ:
            _zero(v, g, H, node, 1.0 if v[x] == v[y] else 0.0, d)
        elif op == NE:
            _zero(v, g, H, node, 1.0 if v[x] != v[y] else 0.0, d)
        elif op == LT:
            _zero(v, g, H, node, 1.0 if v[x] < v[y] else 0.0, d)
        elif op == LE:
            _zero(v, g, H, node, 1.0 if v[x] <= v[y] else 0.0, d)
        elif op == GT:
            _zero(v, g, H, node, 1.0 if v[x] > v[y] else 0.0, d)
        elif op == GE:
            _zero(v, g, H, node, 1.0 if v[x] >= v[y] else 0.0, d)


def evaluate(const int[:, ::1] code, const double[::1] consts, const double[:, ::1] columns,
             const unsigned char[::1] varies, const double[::1] params, Py_ssize_t n_rows):
    """(f, ∇f, ∇²f) of the tape's last node at ``params``, for each of ``n_rows`` data
    rows (shapes (r,), (r, d), (r, d, d); r = 1 when the last node reads no column).

    ``code[node] = (opcode, x, y, z)``: x, y, z are earlier nodes, or for CONST an
    index of ``consts``, PARAM of ``params``, COLUMN a row of ``columns`` (one value per
    data row); ``varies[node]`` whether the node reads a column (directly or below).
    """
    cdef Py_ssize_t N = code.shape[0], node
    cdef int d = params.shape[0], row, op, root
    if N == 0 or code.shape[1] != 4 or varies.shape[0] != N:
        raise ValueError("malformed tape")
    if columns.shape[0] and columns.shape[1] != n_rows:
        raise ValueError("columns and rows disagree")
    for node in range(N):
        op = code[node, 0]
        if op < 0 or op >= N_OPCODES:
            raise ValueError(f"unknown opcode {op}")
        if op == CONST and not 0 <= code[node, 1] < consts.shape[0] or \
                op == PARAM and not 0 <= code[node, 1] < d or \
                op == COLUMN and not 0 <= code[node, 1] < columns.shape[0]:
            raise IndexError(f"node {node} reads outside its operands")
        if op > COLUMN and not (0 <= code[node, 1] < node and 0 <= code[node, 2] < node
                                and 0 <= code[node, 3] < node):
            raise IndexError(f"node {node} reads a later node")
    root = N - 1
    cdef Py_ssize_t rows = n_rows if varies[root] else 1
    value = np.empty(rows)
    grad = np.empty((rows, d))
    hess = np.empty((rows, d, d))
    v_ = np.zeros(N)
    g_ = np.zeros((N, d))
    H_ = np.zeros((N, d, d))
    cdef double[::1] v = v_, out_v = value
    cdef double[:, ::1] g = g_, out_g = grad
    cdef double[:, :, ::1] H = H_, out_H = hess
    cdef int a, b
    with nogil:
        _run(code, consts, columns, params, 0, varies, False, v, g, H, d)
        for row in range(rows):
            if varies[root]:
                _run(code, consts, columns, params, row, varies, True, v, g, H, d)
            out_v[row] = v[root]
            for a in range(d):
                out_g[row, a] = g[root, a]
                for b in range(d):
                    out_H[row, a, b] = H[root, a, b]
    return value, grad, hess
