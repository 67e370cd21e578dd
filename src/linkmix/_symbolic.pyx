# cython: language_level=3
"""Symbolic analysis of a sparse Cholesky factorisation LL' = A: patterns only.

Owns the elimination tree of A's pattern, its postorder, the structure of L and the
partition of L's columns into supernodes (runs of columns whose structure nests, so
that their numbers form one dense panel).  The blocked engine's sparse Schur
complement is laid out from these; ``linkmix._pls`` then factors it numerically.

Patterns are CSC (``indptr``, ``indices``, int32) of a symmetric matrix; only the
entries above the diagonal (row i < column j) are read.
"""

import numpy as np


def elimination_tree(const int[::1] indptr, const int[::1] indices):
    """parent[j] of each column in the elimination tree (-1 for a root): the row of the
    first entry below the diagonal in column j of L.  Liu's algorithm with path
    compression, O(nnz(A) log n)."""
    cdef int n = indptr.shape[0] - 1, j, i, nxt, pos
    parent = np.full(n, -1, dtype=np.int32)
    ancestor = np.full(n, -1, dtype=np.int32)
    cdef int[::1] par = parent, anc = ancestor
    with nogil:
        for j in range(n):
            for pos in range(indptr[j], indptr[j + 1]):
                i = indices[pos]
                while i != -1 and i < j:
                    nxt = anc[i]
                    anc[i] = j
                    if nxt == -1:
                        par[i] = j
                    i = nxt
    return parent


def postorder(const int[::1] parent):
    """order[k] = the column placed k-th by a depth-first postorder of the forest:
    each subtree's columns are consecutive, children (in ascending order) before their
    parent.  Renumbering by a postorder leaves the fill unchanged and makes every
    supernode a run of consecutive columns."""
    cdef int n = parent.shape[0], j, top, node, child, k = 0
    head = np.full(n, -1, dtype=np.int32)
    nxt = np.full(n, -1, dtype=np.int32)
    stack = np.empty(n, dtype=np.int32)
    order = np.empty(n, dtype=np.int32)
    cdef int[::1] hd = head, nx = nxt, st = stack, out = order
    with nogil:
        for j in range(n - 1, -1, -1):  # prepend in descending order: lists ascend
            if parent[j] != -1:
                nx[j] = hd[parent[j]]
                hd[parent[j]] = j
        for j in range(n):
            if parent[j] != -1:
                continue
            top = 0
            st[0] = j
            while top >= 0:
                node = st[top]
                child = hd[node]
                if child == -1:
                    top = top - 1
                    out[k] = node
                    k = k + 1
                else:
                    hd[node] = nx[child]  # consume the child, descend into it
                    top = top + 1
                    st[top] = child
    return order


def column_counts(const int[::1] indptr, const int[::1] indices, const int[::1] parent):
    """Entries below the diagonal in each column of L (``factor_structure``'s counts
    alone: O(n) memory)."""
    cdef int n = indptr.shape[0] - 1, i, c, pos
    counts = np.zeros(n, dtype=np.int64)
    mark = np.full(n, -1, dtype=np.int32)
    cdef long long[::1] cnt = counts
    cdef int[::1] mk = mark
    with nogil:
        for i in range(n):
            mk[i] = i
            for pos in range(indptr[i], indptr[i + 1]):
                c = indices[pos]
                while c < i and mk[c] != i:
                    cnt[c] += 1
                    mk[c] = i
                    c = parent[c]
    return counts


def factor_structure(const int[::1] indptr, const int[::1] indices, const int[::1] parent):
    """(Lp, Li): CSC structure of L below the diagonal, rows ascending.  Row i of L
    holds every column on the tree paths from each k < i with A[k, i] ≠ 0 up to i
    (the row subtree of i), so each column gets its rows in ascending order."""
    cdef int n = indptr.shape[0] - 1, i, c, pos
    Lp = np.concatenate([[0], np.cumsum(column_counts(indptr, indices, parent))])
    Li = np.empty(Lp[n], dtype=np.int32)
    fill = Lp[:n].copy()
    mark = np.full(n, -1, dtype=np.int32)
    cdef int[::1] mk = mark
    cdef long long[::1] fl = fill
    cdef int[::1] li = Li
    with nogil:
        for i in range(n):
            mk[i] = i
            for pos in range(indptr[i], indptr[i + 1]):
                c = indices[pos]
                while c < i and mk[c] != i:
                    li[fl[c]] = i
                    fl[c] += 1
                    mk[c] = i
                    c = parent[c]
    return Lp, Li


#: Relaxed amalgamation (CHOLMOD's defaults): a child supernode merges into its parent
#: when the merged one has at most 4 columns, or at most 16 and under 80% explicit
#: zeros, or at most 48 and under 10%, or any size and under 5%.  Wider panels make
#: fewer, larger BLAS calls; the zeros cost a few flops.
RELAX = ((4, 1.0), (16, 0.8), (48, 0.1), (2 ** 31, 0.05))


def supernodes(const int[::1] parent, const long long[::1] Lp, bint relax=True,
               int dense_rows=0):
    """First column of each supernode, then n: columns of a postordered factor grouped
    into fundamental supernodes (column j + 1 joins j when it is j's parent, j its only
    child, and their structures nest), then, with ``relax``, merged into the next
    supernode (their parent's) by ``RELAX``.  Structures of a merged run: its columns
    and the structure below its last column.  ``dense_rows`` rows below all columns
    (X and y) count in the share of zeros."""
    cdef int n = parent.shape[0], j, s, ns, t, pj
    children = np.bincount(np.asarray(parent)[np.asarray(parent) >= 0], minlength=n)
    counts = np.diff(np.asarray(Lp))  # entries below the diagonal
    first = [0]
    for j in range(1, n):
        if not (parent[j - 1] == j and children[j] == 1 and counts[j - 1] == counts[j] + 1):
            first.append(j)
    first.append(n)
    if not relax or len(first) <= 2:
        return np.array(first, dtype=np.int32)
    ns = len(first) - 1
    start = np.array(first[:-1], dtype=np.int64)
    stop = np.array(first[1:], dtype=np.int64)
    width = stop - start
    below = counts[stop - 1] + dense_rows        # rows under each supernode's panel
    true_nnz = np.add.reduceat(counts, start) + width * (1 + dense_rows)
    col_super = np.repeat(np.arange(ns), width)
    # a group of merged supernodes is identified by its top (parent-most) member;
    # walking down from the root, a supernode joins the group just above it when
    # that group is its parent's and starts right after it
    group_start = start.copy()
    group_width = width.copy()
    group_nnz = true_nnz.copy()
    group_of = np.arange(ns)
    for s in range(ns - 2, -1, -1):
        pj = parent[stop[s] - 1]
        if pj == -1:
            continue
        t = group_of[col_super[pj]]
        if group_start[t] != stop[s]:
            continue
        w = group_width[t] + width[s]
        total = w * (w + 1) // 2 + w * below[t]
        zeros = (total - group_nnz[t] - true_nnz[s]) / total
        if any(w <= most and zeros < share for most, share in RELAX):
            group_of[s] = t
            group_start[t] = start[s]
            group_width[t] = w
            group_nnz[t] += true_nnz[s]
    tops = np.unique(group_of)
    return np.append(np.sort(group_start[tops]), n).astype(np.int32)
