"""The layout of the blocked engine's Schur complement: its order and its supernodes.

Owns the symbolic side of factoring S, what remains of Λ̃'[Z W]'[Z W]Λ̃ + I once the
first term's levels are eliminated one by one (W = [Z2 X y]: the later terms, then X
and y): the order of S's rows, the structure of its Cholesky factor, the partition of
its columns into supernodes, the dense panel each occupies, and where an entry of S
sits in those panels.  Patterns only; ``linkmix._pls.BlockedSystem`` owns the numbers.

Two layouts: ``dense_layout`` (one supernode, the whole of S: cheapest while the later
terms have few levels or meet each other everywhere) and ``sparse_layout`` (the later
terms' levels in a fill-reducing order of CHOLMOD's, then postordered, with relaxed
supernodes).  X and y come last in both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import _symbolic

__all__ = ["SchurLayout", "dense_layout", "sparse_layout", "dense_work", "level_incidence", "ORDERINGS"]

#: Fill-reducing orders of CHOLMOD's that ``sparse_layout`` takes.
ORDERINGS = ("amd", "metis", "colamd")


@dataclass(frozen=True)
class SchurLayout:
    """Rows and supernodes of S (m = q2 + p + 1 rows: q2 random effects, X, y).

    Attributes
    ----------
    perm : ndarray of int32, shape (q2,)
        Row r of S is the ``perm[r]``-th random effect of the later terms (their order).
    super_first : ndarray of int32, shape (ns + 1,)
        First column of each supernode, then m.
    super_rows_ptr : ndarray of int64, shape (ns + 1,)
        Where each supernode's rows start in ``super_rows``.
    super_rows : ndarray of int32
        Each supernode's rows, ascending: its own columns, then the rows below them.
    panel_off : ndarray of int64, shape (ns + 1,)
        Where each supernode's panel (rows × columns, column-major) starts.
    snode_of : ndarray of int32, shape (m,)
        The supernode of each column.
    ordering : str
        "dense", or the fill-reducing order's name.
    flops : float
        Σ_j c_j² over the factor's columns (c_j: entries of column j), proportional
        to the multiply-adds of one numeric factorisation.
    """

    perm: np.ndarray
    super_first: np.ndarray
    super_rows_ptr: np.ndarray
    super_rows: np.ndarray
    panel_off: np.ndarray
    snode_of: np.ndarray
    ordering: str
    flops: float

    @property
    def size(self) -> int:
        """Numbers in all panels together."""
        return int(self.panel_off[-1])

    @property
    def m(self) -> int:
        return len(self.snode_of)

    @property
    def inverse(self) -> np.ndarray:
        """The row of S of each later-term random effect (the inverse of ``perm``)."""
        inverse = np.empty_like(self.perm)
        inverse[self.perm] = np.arange(len(self.perm), dtype=self.perm.dtype)
        return inverse

    @functools.cached_property
    def _row_keys(self) -> np.ndarray:
        """supernode · m + row for every supernode's rows: ascending (supernodes in
        order, rows sorted), so one search finds a row in its supernode."""
        owner = np.repeat(np.arange(len(self.super_first) - 1, dtype=np.int64),
                          np.diff(self.super_rows_ptr))
        return owner * self.m + self.super_rows

    def _column_start(self, cols):
        """(panel position of each column's first row, the column's number of rows)."""
        J = self.snode_of[cols]
        nr = np.diff(self.super_rows_ptr)[J]
        return self.panel_off[J] + (cols - self.super_first[J]) * nr, nr

    def positions(self, rows, cols) -> np.ndarray:
        """Panel positions of the entries (rows, cols) of S, rows ≥ cols (a row must be
        in its column's structure)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        J = self.snode_of[cols].astype(np.int64)
        index = np.searchsorted(self._row_keys, J * self.m + rows) - self.super_rows_ptr[J]
        start, _ = self._column_start(cols)
        return start + index

    def xy_positions(self, p: int) -> np.ndarray:
        """Per column c of S, the panel position of row q2 (X's first) in c's column;
        row q2 + r is at that position + r (below the diagonal, r ≥ c − q2)."""
        start, nr = self._column_start(np.arange(self.m, dtype=np.int64))
        return start + nr - (p + 1)


def dense_layout(q2: int, p: int) -> SchurLayout:
    """S as one supernode: every row, in the terms' order."""
    m = q2 + p + 1
    return SchurLayout(
        perm=np.arange(q2, dtype=np.int32),
        super_first=np.array([0, m], dtype=np.int32),
        super_rows_ptr=np.array([0, m], dtype=np.int64),
        super_rows=np.arange(m, dtype=np.int32),
        panel_off=np.array([0, m * m], dtype=np.int64),
        snode_of=np.zeros(m, dtype=np.int32),
        ordering="dense", flops=dense_work(m))


def dense_work(m: int) -> float:
    """Σ_j c_j² for a dense factor of order m (c_j = m − j)."""
    return m * (m + 1) * (2 * m + 1) / 6


def level_incidence(codes1, slot_rows, n_levels: int, n_rows: int) -> sp.csr_matrix:
    """H (levels of term 1 × later-term rows): 1 where an observation at that level has
    the row among its slots.  S's pattern over the random effects is that of H'H (two
    rows meet in S when one level of term 1 holds both, and so does any observation)."""
    n, k2 = slot_rows.shape
    H = sp.csr_matrix((np.ones(n * k2), (np.repeat(codes1, k2), slot_rows.ravel())),
                      shape=(n_levels, n_rows))
    H.sum_duplicates()
    H.data[:] = 1.0
    return H


def sparse_layout(H: sp.csr_matrix, block_first, p: int, ordering: str = "amd") -> SchurLayout:
    """S's rows in a fill-reducing order and its relaxed supernodes.

    Parameters
    ----------
    H : sparse matrix (levels of term 1 × q2)
        ``level_incidence``.
    block_first : ndarray of int, shape (q2,)
        The first row of each row's block (a level of a later term: its k random
        effects stay together and in order).
    p : int
        Columns of X.
    ordering : {"amd", "metis", "colamd"}
        CHOLMOD's order for the levels of the later terms (of H'H).
    """
    from sksparse.cholmod import analyze_AAt  # imported on first use: slow

    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, not {ordering!r}")
    q2 = H.shape[1]
    m = q2 + p + 1
    block_first = np.asarray(block_first, dtype=np.int64)
    starts = np.flatnonzero(block_first == np.arange(q2))
    width = np.diff(np.append(starts, q2))
    block_of_row = np.searchsorted(starts, block_first)
    Hb = sp.csr_matrix((H.data.copy(), block_of_row[H.indices], H.indptr.copy()),
                       shape=(H.shape[0], len(starts)))  # sum_duplicates works in place
    Hb.sum_duplicates()
    factor = analyze_AAt(Hb.T.tocsc(), mode="simplicial", ordering_method=ordering)
    block_order = factor.P()
    perm = np.concatenate([starts[b] + np.arange(width[b]) for b in block_order]).astype(np.int32)

    pattern = _pattern(H, perm)
    parent = _symbolic.elimination_tree(pattern.indptr, pattern.indices)
    post = _symbolic.postorder(parent)  # keeps each block's rows together and in order
    perm = perm[post]
    pattern = _permuted(pattern, post)
    parent = _symbolic.elimination_tree(pattern.indptr, pattern.indices)
    Lp, Li = _symbolic.factor_structure(pattern.indptr, pattern.indices, parent)
    counts = np.diff(Lp) + 1 + (p + 1)  # entries of each column: diagonal, below, X and y
    flops = float(np.sum(counts.astype(float) ** 2)) + dense_work(p + 1)
    first = _symbolic.supernodes(parent, Lp, True, p + 1)

    roots = np.flatnonzero(parent < 0)
    first = list(first[:-1])
    rows = [np.concatenate([np.arange(f, l), Li[Lp[l - 1]:Lp[l]], np.arange(q2, m)])
            for f, l in zip(first, first[1:] + [q2])]
    if len(roots) > 1:  # else one tree: X and y join its root's panel
        first.append(q2)
        rows.append(np.arange(q2, m))
    first.append(m)
    super_first = np.array(first, dtype=np.int32)
    sizes = np.array([len(r) for r in rows], dtype=np.int64)
    widths = np.diff(super_first).astype(np.int64)
    return SchurLayout(
        perm=perm,
        super_first=super_first,
        super_rows_ptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        super_rows=np.concatenate(rows).astype(np.int32),
        panel_off=np.concatenate([[0], np.cumsum(sizes * widths)]).astype(np.int64),
        snode_of=np.repeat(np.arange(len(widths), dtype=np.int32), widths),
        ordering=ordering, flops=flops)


def _pattern(H, perm) -> sp.csc_matrix:
    """The pattern of H'H with rows and columns in ``perm``'s order (CSC, int32)."""
    Hp = H[:, perm]
    S = (Hp.T @ Hp).tocsc()
    S.sort_indices()
    return sp.csc_matrix((S.data, S.indices.astype(np.int32), S.indptr.astype(np.int32)),
                         shape=S.shape)


def _permuted(pattern, order) -> sp.csc_matrix:
    """A symmetric pattern (CSC, int32) with its rows and columns taken in ``order``: the
    columns gathered, the rows renumbered (cheaper than forming H'H again)."""
    inverse = np.empty(len(order), dtype=np.int32)
    inverse[order] = np.arange(len(order), dtype=np.int32)
    S = pattern[:, order]
    S = sp.csc_matrix((S.data, inverse[S.indices], S.indptr.astype(np.int32)), shape=S.shape)
    S.sort_indices()
    return S
