"""The model matrix of a plain right-hand side, built without formulaic per call.

Owns the fast path of ``design.model_columns``.  A right-hand side is *plain* when
every factor of it is a data column looked up by name (numeric, or categorical with
treatment contrasts), or the intercept: lme4's everyday grammar (``a * b``, ``a:x``,
``0 +``/``- 1``).  Which terms it has and which of their factors are coded without
their first level (reduced) depends only on the text and on which columns are
categorical, so formulaic is asked once per (text, column kinds), on a few rows
of stand-in data, and its answer is cached as a ``Layout``; each call then only
reads the columns and fills the matrix (``_columns.fill_columns``), with formulaic's
column names and order.  Anything else (calls such as ``log(x)`` or ``C(a, Sum)``,
other dtypes) returns None here and goes to formulaic.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _columns

__all__ = ["ColumnFrame", "Layout", "PlainSpec", "categorical", "layout_of", "plain_columns",
           "sorted_levels"]

NUMERICAL, CATEGORICAL = "numerical", "categorical"
#: Longest column whose levels numpy's unique sorts (see ``sorted_levels``).
SHORT_COLUMN = 64


def column_kind(values: pd.Series) -> str | None:
    """How formulaic encodes a data column: categorical (object, str and category
    dtypes), numerical (numbers and booleans), or None for anything else."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype) or dtype == object or dtype == "str":
        return CATEGORICAL
    if (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)) and \
            not pd.api.types.is_complex_dtype(dtype) and not isinstance(dtype, pd.ArrowDtype):
        return NUMERICAL
    return None


@dataclass(frozen=True)
class Layout:
    """The terms of a plain right-hand side for given column kinds.

    ``terms`` lists formulaic's scoped terms in column order, each a tuple of
    (column, kind, reduced) factors (empty: the intercept).  Within a term the first
    factor's levels vary fastest.
    """

    terms: tuple[tuple[tuple[str, str, bool], ...], ...]

    @functools.cached_property
    def factors(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(numeric columns, categorical columns) read, each once, in first use order."""
        numeric, categorical = {}, {}
        for term in self.terms:
            for name, kind, _ in term:
                (numeric if kind == NUMERICAL else categorical).setdefault(name, None)
        return tuple(numeric), tuple(categorical)

    def recipes(self, levels: dict[str, list]):
        """Column names (formulaic's) and the recipe arrays of ``fill_columns`` for
        categorical ``levels`` {column: its levels in code order}."""
        numeric, categorical = self.factors
        num_index = {name: i for i, name in enumerate(numeric)}
        cat_index = {name: i for i, name in enumerate(categorical)}
        names, num_cols, cat_cols = [], [], []
        for term in self.terms:
            parts = []
            for name, kind, reduced in term:
                if kind == NUMERICAL:
                    parts.append([(name, num_index[name], None)])
                else:
                    parts.append([(f"{name}[T.{level}]" if reduced else f"{name}[{level}]",
                                   cat_index[name], code)
                                  for code, level in enumerate(levels[name])
                                  if code > 0 or not reduced])
            for combo in itertools.product(*reversed(parts)):
                combo = combo[::-1]
                names.append(":".join(c[0] for c in combo) or "Intercept")
                num_cols.append([c[1] for c in combo if c[2] is None])
                cat_cols.append([(c[1], c[2]) for c in combo if c[2] is not None])
        p = len(names)
        width_num = max([len(c) for c in num_cols] + [1])
        width_cat = max([len(c) for c in cat_cols] + [1])
        col_numeric = np.full((p, width_num), -1, dtype=np.int64)
        col_factor = np.full((p, width_cat), -1, dtype=np.int64)
        col_level = np.full((p, width_cat), -1, dtype=np.int64)
        for j, (nums, cats) in enumerate(zip(num_cols, cat_cols)):
            col_numeric[j, :len(nums)] = nums
            for a, (f, code) in enumerate(cats):
                col_factor[j, a], col_level[j, a] = f, code
        return names, col_numeric, col_factor, col_level

    def fill(self, numeric: np.ndarray, codes: np.ndarray, n: int, levels: dict[str, list]):
        """(the n × p matrix, its column names) from the columns' values and codes."""
        names, col_numeric, col_factor, col_level = _recipes(
            self, tuple(tuple(levels[name]) for name in self.factors[1]))
        names = list(names)
        out = np.empty((n, len(names)))
        _columns.fill_columns(out, numeric, codes, col_numeric, col_factor, col_level)
        return out, names


@functools.lru_cache(maxsize=1024)
def _recipes(layout: Layout, levels: tuple[tuple, ...]):
    """``layout.recipes`` for the categorical factors' levels in ``factors`` order,
    cached (read-only): a batch's groups and refits share their levels, and the names
    and recipe arrays cost more to make than the matrix they fill."""
    out = layout.recipes(dict(zip(layout.factors[1], (list(lv) for lv in levels))))
    for array in out[1:]:
        array.flags.writeable = False
    return (tuple(out[0]), *out[1:])


@functools.lru_cache(maxsize=256)
def _layout(rhs: str, kinds: tuple[tuple[str, str], ...]) -> Layout | None:
    """formulaic's terms of ``rhs`` over stand-in columns of ``kinds``, or None where a
    factor is not a plain column (or the coding is not one this module reproduces)."""
    from formulaic import model_matrix
    from formulaic.utils.sentinels import UNSET

    from .formula import EVALUATION_CONTEXT

    stand_in = pd.DataFrame({
        name: (pd.Categorical(["l0", "l1", "l2", "l0"]) if kind == CATEGORICAL
               else np.array([0.5, 1.5, 2.5, 4.0]))
        for name, kind in kinds})
    kind_of = dict(kinds)
    try:
        matrix = model_matrix(rhs, stand_in, na_action="raise", context=EVALUATION_CONTEXT)
    except Exception:  # formulaic's own message comes from the general path
        return None
    spec = matrix.model_spec
    terms = []
    for structure in spec.structure:
        for scoped in structure.scoped_terms:
            factors = []
            for scoped_factor in scoped.factors:
                factor = scoped_factor.factor.factor
                name = str(factor.expr)
                if factor.eval_method.name != "LOOKUP" or name not in kind_of:
                    return None
                if kind_of[name] == CATEGORICAL:
                    contrasts = spec.encoder_state.get(name, (None, {}))[1].get("contrasts")
                    if (type(getattr(contrasts, "contrasts", None)).__name__
                            != "TreatmentContrasts" or contrasts.contrasts.base is not UNSET):
                        return None
                factors.append((name, kind_of[name], bool(scoped_factor.reduced)))
            terms.append(tuple(factors))
    layout = Layout(tuple(terms))
    levels = {name: ["l0", "l1", "l2"] for name in layout.factors[1]}
    if layout.recipes(levels)[0] != list(matrix.columns):
        return None  # a naming or order this module does not reproduce
    return layout


def layout_of(rhs: str, columns, data) -> Layout | None:
    """The cached ``Layout`` of a checked ``rhs`` reading ``columns`` of ``data`` (a
    DataFrame or a {column: Series} mapping), or None where the right-hand side or a
    column's dtype is not plain."""
    kinds = []
    for name in sorted(columns):
        kind = column_kind(data[name])
        if kind is None:
            return None
        kinds.append((name, kind))
    return _layout(rhs, tuple(kinds))


def sorted_levels(values: np.ndarray):
    """(distinct values sorted, each value's index among them) of a column without missing
    values: numpy's unique on a short column (pandas' factorize costs a fixed ~20 μs,
    twice as much at 16 rows), pandas' factorize on the array of a long one (a hash
    table, O(n): numpy's sort of 73,421 texts takes 15 times as long), and pandas'
    order where numpy cannot compare the values."""
    if values.dtype.kind not in "biufcmMUSO":
        values = np.asarray(values, dtype=object)
    if len(values) <= SHORT_COLUMN:
        try:
            levels, codes = np.unique(values, return_inverse=True)
            return levels, codes.ravel()
        except TypeError:  # values of mixed types
            pass
    codes, levels = pd.factorize(values, sort=True)
    return np.asarray(levels), codes


def _categorical(values: pd.Series) -> tuple[np.ndarray, list]:
    """(codes, levels) of a categorical column as formulaic encodes it: a category
    column's categories in their order, other columns' sorted distinct values."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(dtype=np.int64), list(values.cat.categories)
    levels, codes = sorted_levels(values.to_numpy())
    return np.asarray(codes, dtype=np.int64), levels.tolist()


class ColumnFrame(dict):
    """{column: Series} of the rows a model uses, each column looked up once, with its
    (codes, levels) as a factor made once too (``categorical``): the fixed effects, a
    grouping factor and the single-level check read the same column."""

    def __init__(self, columns):
        super().__init__(columns)
        self._factors = {}

    def categorical(self, name: str) -> tuple[np.ndarray, list]:
        """(codes, levels) of column ``name`` as formulaic encodes it (``_categorical``);
        the caller does not modify them."""
        if name not in self._factors:
            self._factors[name] = _categorical(self[name])
        return self._factors[name]


def categorical(data, name: str) -> tuple[np.ndarray, list]:
    """(codes, levels) of ``data[name]`` (a DataFrame or mapping), from a
    ``ColumnFrame``'s cache where ``data`` is one."""
    if isinstance(data, ColumnFrame):
        return data.categorical(name)
    return _categorical(data[name])


def _values(layout: Layout, data, n: int, levels: dict | None):
    """The numeric columns (m × n), the codes (c × n) and the levels of ``layout``'s
    factors in ``data`` (n rows); with ``levels`` given (a fit's), codes are of those,
    and a value outside them is a ValueError naming it."""
    numeric_names, categorical_names = layout.factors
    numeric = np.empty((len(numeric_names), n))
    for f, name in enumerate(numeric_names):
        numeric[f] = data[name].to_numpy(dtype=float)
    codes = np.empty((len(categorical_names), n), dtype=np.int64)
    found = {}
    for f, name in enumerate(categorical_names):
        if levels is None:
            codes[f], found[name] = categorical(data, name)
        else:
            found[name] = levels[name]
            index = pd.Index(levels[name]).get_indexer(data[name].to_numpy(dtype=object))
            if (index < 0).any():
                unseen = list(dict.fromkeys(data[name].to_numpy(dtype=object)[index < 0]))
                raise ValueError(f"{name!r} has level(s) {unseen[:5]} not seen in the fit "
                                 f"(its levels are {list(levels[name])[:10]})")
            codes[f] = index
    return numeric, codes, found


class PlainSpec:
    """How a fit's plain columns are rebuilt for new data: the layout and the fit's
    levels.  ``get_model_matrix`` answers as formulaic's ``ModelSpec`` does (a
    DataFrame with the fit's column names), refusing missing values and unseen
    levels with a ValueError."""

    def __init__(self, layout: Layout, levels: dict[str, list]):
        self.layout = layout
        self.levels = levels

    def get_model_matrix(self, data: pd.DataFrame, na_action: str = "raise",
                         context=None) -> pd.DataFrame:
        numeric_names, categorical_names = self.layout.factors
        missing = [name for name in (*numeric_names, *categorical_names)
                   if name not in data.columns]
        if missing:
            raise KeyError(f"column(s) {missing} are missing")
        incomplete = [name for name in (*numeric_names, *categorical_names)
                      if data[name].isna().any()]
        if incomplete:
            raise ValueError(f"column(s) {incomplete} have missing values")
        numeric, codes, levels = _values(self.layout, data, len(data), self.levels)
        X, names = self.layout.fill(numeric, codes, len(data), levels)
        return pd.DataFrame(X, columns=names, index=data.index)


def plain_columns(rhs: str, columns, data: pd.DataFrame, frame=None):
    """(X, formulaic's column names, a ``PlainSpec``) of a checked, plain ``rhs`` over
    ``data`` (complete rows), or None where it is not plain.  ``frame`` ({column:
    Series} of ``data``, fetched once) is read instead of ``data`` where given."""
    frame = data if frame is None else frame
    layout = layout_of(rhs, columns, frame)
    if layout is None:
        return None
    numeric, codes, levels = _values(layout, frame, len(data), None)
    X, names = layout.fill(numeric, codes, len(data), levels)
    return X, names, PlainSpec(layout, levels)
