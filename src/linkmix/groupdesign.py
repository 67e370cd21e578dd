"""One design for a table of many groups, cut per group without calling formulaic.

Owns the fast path of batch fits: the formula is parsed, and formulaic builds the
fixed-effects columns (sparse) and each random-effects expression's columns, once
for a whole table; a group's ``LMMDesign`` is then its rows of those columns,
minus the columns its own model matrix would not have, and its grouping factors
recoded from the table's integer codes.

Why the cut is the group's own model matrix.  With treatment contrasts a factor
contributes indicators of its levels other than the first (reduced coding) or of
every level (full coding, which the formula alone decides).  A group's own model
frame drops the levels it does not have, as lme4's does, so its first level is its
first *present* level: its columns are exactly the table's columns whose every
level is present in the group and is not, where the factor is reduced, the group's
first.  Aliased columns are then dropped by ``drop_dependent_columns`` over the same
columns in the same order, so the same ones go.

Where that argument does not hold, ``TableDesign.build`` returns None and callers
build each group with ``build_design``: transforms whose values depend on the
rows they see (``center``, ``scale``, ``standardize``, ``poly``, splines), ``C(…)``
and other contrasts, and factors that are not plain columns.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import _groupcut
from .design import (LMMDesign, RandomTerm, group_codes, materialize, rename_intercept,
                     assemble_design)
from .errors import FormulaError
from .formula import FormulaSpec

__all__ = ["TableDesign"]

#: Calls whose columns are not the rows of the table's columns (they depend on the
#: rows they are evaluated on, or recode levels).
_ROW_DEPENDENT = re.compile(r"\b(center|scale|standardize|poly|bs|cr|cs|cc|C|Treatment|Sum|"
                            r"Helmert|Diff|Poly|contr)\b")


@dataclass
class _Columns:
    """A model matrix over all rows of a table, and the factor level of each column.

    ``factor_codes[f, i]`` is row i's level code of categorical factor ``f`` (of
    ``factor_sizes[f]``); ``level[f, j]`` is the level of ``f`` that column ``j``
    indicates (-1: the column does not involve ``f``); ``reduced[f, j]`` whether
    ``f`` is coded without its first level there.  The matrix is kept as its CSR
    arrays, in the index type the compiled cut reads.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    names: list[str]
    spec: object
    factor_codes: np.ndarray
    factor_sizes: np.ndarray
    level: np.ndarray
    reduced: np.ndarray

    @classmethod
    def build(cls, rhs: str, data: pd.DataFrame, where: str) -> "_Columns | None":
        from formulaic.utils.sentinels import UNSET

        matrix = materialize(rhs, data, where, output="sparse")
        spec = matrix.model_spec
        factor_index, codes, sizes = {}, [], []
        columns: list[tuple[str, dict[int, tuple[int, bool]]]] = []
        for structure in spec.structure:
            for scoped in structure.scoped_terms:
                parts = []  # per factor: [(label, {factor: (level, reduced)})]
                for scoped_factor in scoped.factors:
                    name = str(scoped_factor.factor.expr)
                    kind, state = spec.encoder_state.get(name, (None, {}))
                    if getattr(kind, "name", "") != "CATEGORICAL":
                        parts.append([(name, {})])
                        continue
                    contrasts = state.get("contrasts")
                    if (type(getattr(contrasts, "contrasts", None)).__name__ != "TreatmentContrasts"
                            or contrasts.contrasts.base is not UNSET or name not in data.columns):
                        return None
                    levels = list(contrasts.levels)
                    if name not in factor_index:
                        row_codes = pd.Index(levels).get_indexer(data[name])
                        if np.any(row_codes < 0):
                            return None
                        factor_index[name] = len(codes)
                        codes.append(row_codes.astype(np.int64))
                        sizes.append(len(levels))
                    f = factor_index[name]
                    reduced = bool(scoped_factor.reduced)
                    parts.append([(f"{name}[T.{lev}]" if reduced else f"{name}[{lev}]",
                                   {f: (i, reduced)})
                                  for i, lev in enumerate(levels) if i > 0 or not reduced])
                # formulaic's order: the first factor varies fastest
                for combo in itertools.product(*reversed(parts)):
                    combo = combo[::-1]
                    label = ":".join(c[0] for c in combo) or "Intercept"
                    columns.append((label, {k: v for c in combo for k, v in c[1].items()}))
        names = [label for label, _ in columns]
        if names != list(spec.column_names):
            return None  # a coding this reading does not know: build groups one by one
        level = np.full((len(codes), len(names)), -1, dtype=np.int64)
        reduced = np.zeros((len(codes), len(names)), dtype=bool)
        for j, (_, factors) in enumerate(columns):
            for f, (lev, red) in factors.items():
                level[f, j], reduced[f, j] = lev, red
        csr = sp.csr_matrix(matrix)
        return cls(indptr=csr.indptr.astype(np.int64), indices=csr.indices.astype(np.int64),
                   values=np.ascontiguousarray(csr.data, dtype=float),
                   names=rename_intercept(names), spec=spec,
                   factor_codes=np.array(codes, dtype=np.int64).reshape(len(codes), len(data)),
                   factor_sizes=np.array(sizes, dtype=np.int64), level=level,
                   reduced=reduced.astype(np.uint8))

    def present(self, start: int, stop: int) -> np.ndarray:
        """Indices of the columns the model matrix of rows ``start:stop`` alone has."""
        return _groupcut.present_columns(self.factor_codes, self.factor_sizes, self.level,
                                         self.reduced, start, stop)

    def dense(self, start: int, stop: int, columns: np.ndarray) -> np.ndarray:
        """Rows ``start:stop`` of the (sorted) ``columns`` as a dense array."""
        return _groupcut.rows_dense(self.indptr, self.indices, self.values, start, stop,
                                    columns, len(self.names))


class TableDesign:
    """The columns of one formula over a whole table (complete rows, groups contiguous).

    Use ``TableDesign.build``; then ``group(start, stop)`` is the design of rows
    ``start:stop`` exactly as ``build_design`` would make it from those rows alone.
    ``group`` uses scratch buffers of the table design: one thread cuts at a time.
    """

    def __init__(self, spec: FormulaSpec, data: pd.DataFrame, fixed: _Columns,
                 random: list[tuple[object, _Columns, np.ndarray, pd.Index, np.ndarray]]):
        self.spec = spec
        self.y = data[spec.response].to_numpy(dtype=float)
        self.index = data.index.to_numpy()  # a group's row labels: a slice, not an Index
        self.fixed = fixed
        self.random = random

    @classmethod
    def build(cls, spec: FormulaSpec, data: pd.DataFrame) -> "TableDesign | None":
        """The table's design, or None where groups must be built one by one (see the
        module's notes).  ``data`` holds complete rows of every column the model reads."""
        texts = [spec.fixed, *(term.expr for term in spec.random)]
        if any(_ROW_DEPENDENT.search(text) for text in texts):
            return None
        fixed = _Columns.build(spec.fixed, data, "the fixed-effects part")
        if fixed is None:
            return None
        random = []
        for term in spec.random:
            where = f"random-effects term ({term.expr} | {term.group_name})"
            columns = _Columns.build(term.expr, data, where)
            if columns is None:
                return None
            codes, levels = group_codes(data, term.group)
            scratch = np.full(len(levels), -1, dtype=np.int64)  # see _groupcut.local_codes
            random.append((term, columns, codes, levels, scratch))
        return cls(spec, data, fixed, random)

    def group(self, start: int, stop: int, *, drop_rank_deficient: bool = True,
              check_sizes: bool = True, n_dropped: int = 0) -> LMMDesign:
        """The design of rows ``start:stop``; raises ``DataError`` and warns of dropped
        columns as ``build_design`` does."""
        fixed = self.fixed
        columns = fixed.present(start, stop)
        X = fixed.dense(start, stop, columns)
        terms = []
        for spec, expr, codes, levels, scratch in self.random:
            used = expr.present(start, stop)
            if not used.size:
                raise FormulaError(f"random-effects term ({spec.expr} | {spec.group_name}) "
                                   f"has no coefficients")
            Z = expr.dense(start, stop, used)
            present, local = _groupcut.local_codes(codes, start, stop, scratch)
            group_levels = levels[present]
            names = [expr.names[j] for j in used]
            split = [[j] for j in range(len(used))] if spec.independent else \
                [list(range(len(used)))]
            for cols in split:
                terms.append(RandomTerm(
                    group=spec.group_name, group_columns=spec.group,
                    coef_names=tuple(names[j] for j in cols), levels=group_levels,
                    codes=local, Z=Z if len(split) == 1 else np.ascontiguousarray(Z[:, cols]),
                    expr_spec=expr.spec, expr_columns=tuple(int(used[j]) for j in cols),
                    independent=spec.independent))
        return assemble_design(self.spec, self.y[start:stop], X,
                               [fixed.names[j] for j in columns], terms,
                               fixed_spec=fixed.spec, drop_rank_deficient=drop_rank_deficient,
                               check_sizes=check_sizes, n_dropped=n_dropped,
                               row_index=self.index[start:stop])
