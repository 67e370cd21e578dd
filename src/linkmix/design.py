"""Formula specs + a DataFrame → the numbers of a linear mixed model.

Owns: checking the data against the formula (columns, types, missing values,
levels), the fixed-effects matrix X (``model_columns``: compiled for plain
right-hand sides, else formulaic; with rank check), the
response y, and the random-effects terms (grouping codes, raw covariates Z,
level labels) in lme4's term order, plus the θ template of Λ.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from formulaic import Formula, model_matrix
from formulaic.errors import FormulaicError

from . import arguments
from .errors import DataError, FormulaError, MissingDataWarning, RankDeficiencyWarning
from .columns import ColumnFrame, categorical, plain_columns, sorted_levels
from .linalg import pow2_column_scales, scaled_qr
from .formula import (EVALUATION_CONTEXT, FormulaSpec, RandomTermSpec, check_terms, parse_formula,
                      plain_message)

__all__ = ["RandomTerm", "RandomEffectsLayout", "LMMDesign", "build_design", "drop_dependent_columns",
           "check_identifiable", "term_label", "single_level_factors",
           "model_frame", "complete_rows", "require_numeric_response", "require_columns",
           "required_variables", "materialize", "model_columns", "group_codes", "lme4_term_order",
           "rename_intercept", "assemble_design", "design_from_arrays", "INTERCEPT"]

INTERCEPT = "(Intercept)"


def rename_intercept(names):
    return [INTERCEPT if name == "Intercept" else name for name in names]


@dataclass
class RandomTerm:
    """One random-effects term with data: ``b = (I_ℓ ⊗ T) u`` for its ℓ levels.

    Attributes
    ----------
    group : str
        Name of the grouping factor (``"a:b"`` for an interaction).
    coef_names : tuple of str
        Names of the k coefficients that vary by group.
    levels : pandas.Index
        Level labels, in the order of the codes.
    codes : ndarray of int32, shape (n,)
        Level of each observation.
    Z : ndarray, shape (n, k)
        Raw covariates of each observation (rows of the term's model matrix).
    independent : bool
        Whether this term came from ``||`` (a split of a larger term).
    """

    group: str
    group_columns: tuple[str, ...]
    coef_names: tuple[str, ...]
    levels: pd.Index
    codes: np.ndarray
    Z: np.ndarray
    expr_spec: object = field(repr=False)
    expr_columns: tuple[int, ...] = ()
    independent: bool = False

    # Cached: read on every deviance evaluation, and fixed once the term exists.
    @functools.cached_property
    def k(self) -> int:
        return self.Z.shape[1]

    @functools.cached_property
    def covariate_factor(self) -> np.ndarray:
        """R_t of Z_t/√n = Q_tR_t (k × k, upper triangular): the covariates' sizes and
        angles, in which a covariance's singular call is measured (``results``)."""
        if self.Z.shape[1] == 1:   # the column's RMS: a QR's R up to its sign
            return np.array([[math.sqrt(float(self.Z[:, 0] @ self.Z[:, 0]) / len(self.Z))]])
        return np.linalg.qr(self.Z / math.sqrt(len(self.Z)), mode="r")

    @functools.cached_property
    def n_levels(self) -> int:
        return len(self.levels)

    @functools.cached_property
    def q(self) -> int:
        return self.k * self.n_levels

    def level_index(self, newdata: pd.DataFrame, allow_new_levels: bool = True) -> np.ndarray:
        """Each row's level of this term in ``newdata``: -1 for a level not seen in the
        fit where ``allow_new_levels``, else a DataError naming such levels (lme4's
        ``allow.new.levels``)."""
        absent = [c for c in self.group_columns if c not in newdata.columns]
        if absent:
            raise DataError(f"newdata lacks grouping column(s) {absent}")
        labels = newdata[list(self.group_columns)].astype(str).agg(":".join, axis=1)
        index = self.levels.get_indexer(labels)
        if not allow_new_levels and (index < 0).any():
            new = list(dict.fromkeys(labels[index < 0]))
            raise DataError(f"newdata has level(s) {new[:5]}{' …' if len(new) > 5 else ''} of "
                            f"{self.group!r} not seen in the fit; pass allow_new_levels=True to "
                            f"predict them at the population level (random effects 0), as "
                            f"lme4's allow.new.levels")
        return index

    def theta_positions(self) -> list[tuple[int, int]]:
        """(row, column) of T's free entries in lme4's θ order (lower triangle by columns)."""
        return [(i, j) for j in range(self.k) for i in range(j, self.k)]


class RandomEffectsLayout:
    """The random-effects part shared by linear and nonlinear designs: Λ_θ and Z.

    Needs ``terms`` (list of ``RandomTerm``) and ``n``.
    """

    @property
    def q(self) -> int:
        return sum(term.q for term in self.terms)

    @property
    def n_theta(self) -> int:
        return sum(len(term.theta_positions()) for term in self.terms)

    def theta_template(self):
        """Arrays describing θ → T for the compiled kernels (shared, read-only).

        Returns
        -------
        tmpl, tmpl_off, term_k : int32 arrays
            ``tmpl[tmpl_off[t] + a*k + b]`` is the θ index of ``T_t[a, b]`` or -1.
        lower : ndarray
            Lower bounds of θ: 0 on diagonal entries of T, -inf elsewhere.
        """
        return _theta_template(tuple(term.k for term in self.terms))

    @property
    def theta_lower(self) -> np.ndarray:
        """Lower bounds of θ, the one place they are read from: 0 on diagonal entries of
        each T, -inf elsewhere (read-only, shared by designs of the same term sizes)."""
        return self.theta_template()[3]

    def theta_start(self) -> np.ndarray:
        """lme4's start: T = I for every term."""
        return np.array([1.0 if i == j else 0.0
                         for term in self.terms for i, j in term.theta_positions()])

    def column_flips(self, theta) -> list[tuple[np.ndarray, int]]:
        """θ's other representations of the same covariances, for an optimiser stopped on
        a bound: ``(theta', k)`` for each column of a T whose diagonal entry (θ_k) is zero
        and which has a nonzero entry below it, ``theta'`` with that column negated.

        TT' is the sum of the columns' outer products, so negating a column leaves it
        unchanged; the bound T_jj ≥ 0 picks a column's sign only while T_jj > 0.  At
        T_jj = 0 the derivative inward is 2·T_:j'(∂D/∂Σ)e_j, whose sign is the column's:
        an optimiser held at the bound by one sign may fall inward from the other."""
        theta = np.asarray(theta, dtype=float)
        out, index = [], 0
        for term in self.terms:
            positions = term.theta_positions()
            for j in range(term.k if term.k > 1 else 0):
                column = [index + m for m, (_, c) in enumerate(positions) if c == j]
                diagonal, below = column[0], column[1:]
                if theta[diagonal] == 0.0 and np.any(theta[below] != 0.0):
                    flipped = theta.copy()
                    flipped[below] = -flipped[below]
                    out.append((flipped, diagonal))
            index += len(positions)
        return out

    def T_blocks(self, theta) -> list[np.ndarray]:
        """Each term's lower-triangular T at ``theta``."""
        blocks, index = [], 0
        for term in self.terms:
            T = np.zeros((term.k, term.k))
            for i, j in term.theta_positions():
                T[i, j] = theta[index]
                index += 1
            blocks.append(T)
        return blocks

    def Lambda_sparse(self, theta):
        """Λ_θ (q × q) as a CSC matrix: block diagonal, I_ℓ ⊗ T per term."""
        return sp.block_diag([sp.kron(sp.identity(term.n_levels), T)
                              for term, T in zip(self.terms, self.T_blocks(theta))],
                             format="csc")

    def by_term(self, v) -> list[np.ndarray]:
        """A vector over all random effects (u or b, θ's term order) as one
        (levels × k) array per term."""
        out, offset = [], 0
        for term in self.terms:
            out.append(np.asarray(v[offset:offset + term.q]).reshape(term.n_levels, term.k))
            offset += term.q
        return out

    def Lambda_times(self, theta, u, transpose: bool = False) -> np.ndarray:
        """b = Λ_θ u (Λ_θ'u with ``transpose``), term by term: u (q, or q × m for m
        vectors at once) in θ's term order, k coefficients per level."""
        u = np.asarray(u)
        out, index, offset = [], 0, 0
        for term in self.terms:
            block = u[offset:offset + term.q]
            offset += term.q
            if term.k == 1:  # T is the scalar θ
                out.append(block * theta[index])
                index += 1
                continue
            T = np.zeros((term.k, term.k))
            for i, j in term.theta_positions():
                T[i, j] = theta[index]
                index += 1
            M = T.T if transpose else T  # level l: b_l = M u_l
            shaped = block.reshape((term.n_levels, term.k) + block.shape[1:])
            out.append(np.einsum("ab,lb...->la...", M, shaped).reshape(block.shape))
        return np.concatenate(out)

    def Z_sparse(self, Zs=None):
        """Z (n × q) as a CSR matrix, terms side by side in θ order; ``Zs`` (one n × k
        array per term) replaces the terms' covariate values, as a nonlinear model's
        ∂μ/∂φ does."""
        blocks = []
        for t, term in enumerate(self.terms):
            values = term.Z if Zs is None else np.asarray(Zs[t], dtype=float)
            cols = term.codes[:, None] * term.k + np.arange(term.k)[None, :]
            rows = np.repeat(np.arange(self.n), term.k)
            blocks.append(sp.csr_matrix((values.ravel(), (rows, cols.ravel())),
                                        shape=(self.n, term.q)))
        return sp.hstack(blocks, format="csr")




@dataclass
class LMMDesign(RandomEffectsLayout):
    """Everything numeric a linear mixed model needs, and how it was built."""

    formula: FormulaSpec
    y: np.ndarray
    X: np.ndarray
    fixed_names: list[str]
    terms: list[RandomTerm]
    fixed_spec: object = field(repr=False)
    n_dropped: int = 0
    dropped_columns: list[str] = field(default_factory=list)
    row_index: pd.Index | np.ndarray | None = None  # labels of the rows of data used
    #: categorical fixed-effects variables with one level, left out: {name: level}
    single_level_factors: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

@functools.lru_cache(maxsize=64)
def _theta_template(sizes: tuple[int, ...]):
    """``RandomEffectsLayout.theta_template`` for terms with ``sizes`` coefficients each
    (in lme4's θ order: the lower triangle of each T by columns)."""
    term_k = np.array(sizes, dtype=np.int32)
    tmpl_off = np.zeros(len(sizes), dtype=np.int32)
    tmpl_off[1:] = np.cumsum(term_k[:-1] ** 2)
    tmpl = np.full(int(np.sum(term_k ** 2)), -1, dtype=np.int32)
    lower, index = [], 0
    for t, k in enumerate(sizes):
        for j in range(k):
            for i in range(j, k):
                tmpl[tmpl_off[t] + i * k + j] = index
                lower.append(0.0 if i == j else -np.inf)
                index += 1
    lower = np.array(lower)
    for array in (tmpl, tmpl_off, term_k, lower):
        array.flags.writeable = False
    return tmpl, tmpl_off, term_k, lower


def model_frame(data: pd.DataFrame, used, missing: str = "drop", stacklevel: int = 4):
    """(the complete rows of ``data`` in the ``used`` columns, how many were dropped): the
    one missing-data rule of every model (see ``complete_rows``)."""
    data, _, n_dropped = complete_rows(data, used, missing, stacklevel + 1)
    return data, n_dropped


def complete_rows(data: pd.DataFrame, used, missing: str = "drop", stacklevel: int = 4,
                  fetched=None):
    """(the complete rows of ``data`` in the ``used`` columns, {column: its Series over
    them} for the used columns, how many rows were dropped).

    ``missing="raise"`` refuses incomplete rows; ``"drop"`` drops them with a
    ``MissingDataWarning`` naming the columns.  Unused categories are removed, as R's
    model frames do: a level no row has must not become the reference level (it would
    silently change which contrasts are estimated).  Each column is looked up once
    (pandas builds a Series per lookup) and tested on its array (a frame's
    ``isna().any(axis=1)`` costs a hundred times more on a small table); ``fetched``
    ({column: Series}) are columns the caller has looked up already.
    """
    arguments.choice(missing, "missing", ("drop", "raise"))
    wanted, fetched = set(used), fetched or {}
    frame = ColumnFrame({c: fetched[c] if c in fetched else data[c]
                         for c in data.columns if c in wanted})
    holes = {c: np.asarray(column.array.isna()) for c, column in frame.items()}
    bad = [c for c, hole in holes.items() if hole.any()]
    n_dropped = 0
    if bad:
        incomplete = np.logical_or.reduce([holes[c] for c in bad])
        n_dropped = int(incomplete.sum())
        if missing == "raise":
            raise DataError(f"{n_dropped} row(s) have missing values in column(s) {bad}")
        warnings.warn(f"dropped {n_dropped} of {len(data)} rows with missing values in "
                      f"column(s) {bad}", MissingDataWarning, stacklevel=stacklevel)
        data = data.loc[~incomplete]
        frame = ColumnFrame({c: data[c] for c in frame})
    if len(data) == 0:
        raise DataError("no complete rows are left to fit")
    unused = {c: column.cat.remove_unused_categories() for c, column in frame.items()
              if isinstance(column.dtype, pd.CategoricalDtype)}
    if unused:
        data = data.assign(**unused)
        frame = ColumnFrame({**frame, **unused})
    return data, frame, n_dropped


def single_level_factors(data, fixed_variables) -> dict:
    """{name: level} of the categorical fixed-effects variables with one level in the rows
    used.  Their contrasts are no columns (lme4 refuses them: 'contrasts can be applied
    only to factors with 2 or more levels'); a fit leaves them out and says so, since a
    table of many groups (a peptide measured in one fragment) is fitted with one formula."""
    out = {}
    for name in sorted(fixed_variables):
        column = data[name]
        if column.dtype.kind in "iuf" or (
                pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
            continue
        if isinstance(data, ColumnFrame):  # complete rows (``complete_rows``)
            levels = categorical(data, name)[1]
        else:
            levels = pd.unique(column.to_numpy(dtype=object))
            levels = levels[~pd.isna(levels)]
        if len(levels) == 1:
            out[name] = str(levels[0])
    return out


def require_numeric_response(values: pd.Series, name: str) -> None:
    """Refuse a response that is not numbers, showing a value that is not one."""
    if values.dtype.kind in "iufb" or pd.api.types.is_numeric_dtype(values) or \
            pd.api.types.is_bool_dtype(values):
        return
    present = values.dropna()
    if present.empty:
        raise DataError(f"the response {name!r} has no non-missing values")
    bad = present[pd.to_numeric(present, errors="coerce").isna()]
    example = f"e.g. {bad.iloc[0]!r}" if len(bad) else \
        "numbers stored as text; convert the column to numbers"
    raise DataError(f"the response {name!r} must be numeric; it has dtype {values.dtype} "
                    f"({example})")


def require_columns(data: pd.DataFrame, names, where: str) -> None:
    missing = [name for name in names if name not in data.columns]
    if missing:
        shown = ", ".join(repr(m) for m in missing)
        raise DataError(f"unknown column{'s' if len(missing) > 1 else ''} {shown} in {where}; "
                        f"the data has columns {list(map(str, data.columns))}")


@functools.lru_cache(maxsize=256)
def _parsed(rhs: str) -> Formula:
    """formulaic's parse of a right-hand side that passed ``check_terms``, cached: parsing
    is a third of the cost of a small model matrix, and batch fits reuse one formula."""
    return Formula(rhs)


def required_variables(rhs: str, where: str) -> set[str]:
    """The data columns ``rhs`` reads (after the whitelist check of ``check_terms``)."""
    return set(check_terms(rhs, where))


def materialize(rhs: str, data: pd.DataFrame, where: str, output: str = "pandas"):
    """formulaic's model matrix of a checked ``rhs`` (``output``: "pandas" or "sparse"):
    the only place formula text is evaluated, and only with ``EVALUATION_CONTEXT``
    besides the data."""
    check_terms(rhs, where)
    try:
        return model_matrix(_parsed(rhs), data, na_action="raise", context=EVALUATION_CONTEXT,
                            output=output)
    except (FormulaicError, ValueError, TypeError, KeyError, NameError) as exc:
        raise FormulaError(f"cannot build the model matrix of {where} {rhs!r}: "
                           f"{plain_message(str(exc))}") from None


def model_columns(rhs: str, data: pd.DataFrame, where: str, frame=None):
    """(X as a C-contiguous float array, column names as formulaic gives them, the spec
    that rebuilds them for new data) of a right-hand side over complete rows.

    A plain right-hand side (columns and their interactions, see ``linkmix.columns``)
    is filled by compiled code from its cached layout; anything else goes through
    formulaic (``materialize``).  Both give the same numbers and names.  ``frame``
    ({column: Series} of ``data``'s columns, fetched once) spares pandas' lookups.
    """
    plain = plain_columns(rhs, check_terms(rhs, where), data, frame)
    if plain is not None:
        return plain
    matrix = materialize(rhs, data, where)
    return (np.ascontiguousarray(np.asarray(matrix, dtype=float)), list(matrix.columns),
            matrix.model_spec)


def group_codes(data, columns: tuple[str, ...]):
    """Integer codes and labels of the (interaction of) grouping columns of ``data`` (a
    DataFrame or a {column: Series} mapping).

    The labels are an object-dtype Index: a batch takes each group's levels from the
    table's, and taking from pandas' Arrow-backed strings costs ~100 μs a call.
    """
    codes_list, labels_list = [], []
    for col in columns:
        values = data[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.cat.remove_unused_categories()
            codes, labels = values.cat.codes.to_numpy(), values.cat.categories
        elif isinstance(data, ColumnFrame):
            codes, labels = categorical(data, col)
        else:
            labels, codes = sorted_levels(values.to_numpy())
        codes_list.append(np.asarray(codes, dtype=np.int64))
        labels_list.append(np.asarray(labels).astype(str))
    if len(columns) == 1:
        return codes_list[0].astype(np.int32), pd.Index(labels_list[0], name=columns[0],
                                                        dtype=object)
    sizes = [max(1, len(labels)) for labels in labels_list]
    if float(np.prod(np.array(sizes, dtype=float))) < 2.0 ** 62:
        # one integer per combination, in mixed radix: its sorted order is the
        # combinations' lexicographic order (a 1-d sort: ~10 times np.unique(axis=0)'s)
        key = np.zeros(len(codes_list[0]), dtype=np.int64)
        for codes, size in zip(codes_list, sizes):
            key = key * size + codes
        unique, codes = np.unique(key, return_inverse=True)
        combos = np.empty((len(unique), len(columns)), dtype=np.int64)
        for c in range(len(columns) - 1, -1, -1):
            combos[:, c] = unique % sizes[c]
            unique = unique // sizes[c]
    else:
        combos, codes = np.unique(np.stack(codes_list, axis=1), axis=0, return_inverse=True)
    labels = [":".join(labels_list[c][combo[c]] for c in range(len(columns))) for combo in combos]
    return codes.ravel().astype(np.int32), pd.Index(labels, name=":".join(columns),
                                                    dtype=object)


def lme4_term_order(terms: list[RandomTerm]) -> list[RandomTerm]:
    """lme4 reorders terms by decreasing number of levels, only when not already so."""
    n_levels = [term.n_levels for term in terms]
    if any(later > earlier for earlier, later in zip(n_levels, n_levels[1:])):
        order = np.argsort(n_levels, kind="stable")[::-1]
        return [terms[i] for i in order]
    return terms


def _build_terms(spec: RandomTermSpec, data: pd.DataFrame, frame) -> list[RandomTerm]:
    where = f"random-effects term ({spec.expr} {'||' if spec.independent else '|'} {spec.group_name})"
    Z, names, expr_spec = model_columns(spec.expr, data, where, frame)
    names = rename_intercept(names)
    if Z.shape[1] == 0:
        raise FormulaError(f"{where} has no coefficients")
    codes, levels = group_codes(frame, spec.group)
    split = [(j,) for j in range(Z.shape[1])] if spec.independent else [tuple(range(Z.shape[1]))]
    return [RandomTerm(group=spec.group_name, group_columns=spec.group,
                       coef_names=tuple(names[j] for j in cols), levels=levels, codes=codes,
                       Z=np.ascontiguousarray(Z[:, list(cols)]), expr_spec=expr_spec,
                       expr_columns=cols, independent=spec.independent)
            for cols in split]


def drop_dependent_columns(X: np.ndarray, names: list[str], tol: float = 1e-7):
    """Drop columns of X that are (numerically) combinations of earlier columns.

    Column j is dependent when the part of it orthogonal to the kept columns before
    it is below ``tol`` times its norm, the test of R's ``qr(X, tol = 1e-7)`` that
    lme4 uses: later columns are dropped first.  Columns are scaled by powers of two
    first (see ``pow2_column_scales``), so huge or tiny columns are judged like any
    other.  With fewer rows than columns at most n columns are kept.

    One Householder QR decides when no column is dependent (its |R_jj| is exactly that
    orthogonal part while no earlier column was dropped); otherwise the columns are
    taken in order and orthogonalised twice against the kept ones (Gram–Schmidt
    reorthogonalised), so a dropped column cannot disturb later ones.
    """
    n, p = X.shape
    if p == 0:
        return X, names, []
    if n >= p:
        _, R, D, norms = scaled_qr(X, False)
        if all(0 < tol * norm < r for r, norm in zip(R.diagonal().tolist(), norms.tolist())):
            return X, names, []
        scaled = X / D
    else:
        scaled = X / pow2_column_scales(X)
        norms = np.linalg.norm(scaled, axis=0)
    basis = np.empty((n, min(n, p)))
    keep = []
    for j in range(p):
        if len(keep) == n or norms[j] == 0:
            continue
        v = scaled[:, j].copy()
        for _ in range(2):
            v -= basis[:, :len(keep)] @ (basis[:, :len(keep)].T @ v)
        residual = float(np.linalg.norm(v))
        if residual > tol * norms[j]:
            basis[:, len(keep)] = v / residual
            keep.append(j)
    kept = set(keep)
    dropped = [names[j] for j in range(p) if j not in kept]
    return np.ascontiguousarray(X[:, keep]), [names[j] for j in keep], dropped


def build_design(formula: str | FormulaSpec, data: pd.DataFrame, *,
                 missing: str = "drop", drop_rank_deficient: bool = True,
                 check_sizes: bool = True) -> LMMDesign:
    """Check ``data`` against ``formula`` and build the model's numbers.

    Parameters
    ----------
    formula : str or FormulaSpec
        lme4-style formula.
    data : pandas.DataFrame
        One row per observation.
    missing : {"drop", "raise"}
        What to do with rows holding missing values in a used column: drop them
        (counted in ``n_dropped`` and warned about) or raise.
    drop_rank_deficient : bool
        Drop fixed-effects columns that are combinations of earlier ones (as lme4);
        False keeps them, for models whose constraints identify them.
    check_sizes : bool
        Require more observations than fixed effects, levels and random effects.
        False builds the structure (names, terms) of a sample of rows that is not
        itself to be fitted.
    """
    spec = formula if isinstance(formula, FormulaSpec) else parse_formula(formula)
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    arguments.flag(drop_rank_deficient, "drop_rank_deficient")

    require_columns(data, [spec.response], f"the response of {spec.text!r}")
    fixed_vars = required_variables(spec.fixed, "the fixed-effects part")
    require_columns(data, sorted(fixed_vars), f"the fixed-effects part {spec.fixed!r}")
    used = {spec.response} | fixed_vars
    for term in spec.random:
        expr_vars = required_variables(term.expr, "random-effects expression")
        where = f"random-effects term ({term.expr} | {term.group_name})"
        require_columns(data, sorted(expr_vars) + list(term.group), where)
        used |= expr_vars | set(term.group)
    response = data[spec.response]
    require_numeric_response(response, spec.response)
    data, frame, n_dropped = complete_rows(data, used, missing,
                                           fetched={spec.response: response})
    y = frame[spec.response].to_numpy(dtype=float)
    single = single_level_factors(frame, fixed_vars)
    if single:
        warnings.warn("; ".join(single_level_sentence(name, level)
                                for name, level in single.items()),
                      RankDeficiencyWarning, stacklevel=3)
    X, fixed_names, fixed_spec = model_columns(spec.fixed, data, "the fixed-effects part", frame)
    terms = [t for term_spec in spec.random for t in _build_terms(term_spec, data, frame)]
    design = assemble_design(spec, y, X, rename_intercept(fixed_names), terms,
                           fixed_spec=fixed_spec,
                           drop_rank_deficient=drop_rank_deficient, check_sizes=check_sizes,
                           n_dropped=n_dropped, row_index=data.index)
    design.single_level_factors = single
    return design


def single_level_sentence(name: str, level: str) -> str:
    """What a fit says of a factor left out for having one level."""
    return (f"the factor {name!r} has one level ({level!r}) in the rows used: its effect "
            f"cannot be estimated and is left out of the fixed effects")


def assemble_design(spec: FormulaSpec, y: np.ndarray, X: np.ndarray, names: list[str],
                    terms: list[RandomTerm], *, fixed_spec, drop_rank_deficient: bool = True,
                    check_sizes: bool = True, n_dropped: int = 0,
                    row_index: pd.Index | np.ndarray | None = None) -> LMMDesign:
    """The checks and choices every design goes through once its numbers exist: finite
    values, aliased fixed-effects columns dropped (``drop_dependent_columns``), lme4's
    term order, and enough observations for what is estimated (see ``build_design``).
    ``terms`` are in formula order; ``X`` and ``names`` are formulaic's columns."""
    if not np.isfinite(y).all():
        raise DataError(f"the response {spec.response!r} has infinite values")
    if not np.isfinite(X).all():
        raise DataError(f"the fixed-effects design of {spec.fixed!r} has infinite values")
    dropped = []
    if drop_rank_deficient:
        X, names, dropped = drop_dependent_columns(X, names)
    rank = X.shape[1] if drop_rank_deficient else (
        int(np.linalg.matrix_rank(X / pow2_column_scales(X))) if X.shape[1] else 0)
    if check_sizes and len(y) <= rank:
        raise DataError(f"{len(y)} observation(s) for {rank} identifiable fixed effect(s)"
                        + (f" (of {len(names) + len(dropped)} columns)" if dropped or
                           rank < X.shape[1] else "")
                        + ": the residual variance needs more observations than fixed effects")
    if dropped:
        warnings.warn(f"fixed-effects design is rank deficient; dropping column(s) {dropped}",
                      RankDeficiencyWarning, stacklevel=4)
    for term in terms:
        if term.n_levels < 2:
            raise DataError(f"grouping factor {term.group!r} has only {term.n_levels} level; "
                            f"a variance needs at least 2 levels")
        if not np.isfinite(term.Z).all():
            raise DataError(f"random-effects covariates of {term.coef_names} have infinite values")
    terms = lme4_term_order(terms)
    if check_sizes:
        check_identifiable(terms, len(y))
    return LMMDesign(formula=spec, y=y, X=X, fixed_names=names, terms=terms,
                     fixed_spec=fixed_spec, n_dropped=n_dropped, dropped_columns=dropped,
                     row_index=row_index)


#: The covariance structure's Gram matrix (scaled to a unit diagonal) is singular when its
#: smallest eigenvalue is below this: one variance is then a combination of the others.
UNIDENTIFIABLE = 1e-10


def term_label(term: RandomTerm) -> str:
    """A term as a formula writes it, e.g. ``(1 + x | g)``."""
    coefficients = " + ".join("1" if c == INTERCEPT else c for c in term.coef_names)
    return f"({coefficients} {'||' if term.independent else '|'} {term.group})"


def check_identifiable(terms: list[RandomTerm], n: int) -> None:
    """Refuse, naming the term, what cannot be estimated (lme4's checks, per term, and
    what they approximate, exactly).

    Per term t, as lme4: fewer levels than observations (a level per observation is
    the residual) and fewer random effects q_t than observations.  lme4 stops at q ≥ n
    for no term together, and neither does this: q ≥ n in all is fine where the
    covariance matrices σ²I and G_tab = Z_t(I ⊗ E_ab)Z_t' (one per variance and
    covariance) are linearly independent, for then V = σ²I + Σγ_tab·G_tab determines
    every variance.  That is checked from their Gram matrix tr(G_iG_j) = tr(F_iCF_jC)
    (C = Z'Z, F_i the q × q pattern of G_i) whenever q ≥ n: a singular Gram matrix
    names the parameters its null vector moves.
    """
    q = 0
    for term in terms:
        label = term_label(term)
        if term.n_levels >= n:
            raise DataError(f"grouping factor {term.group!r} of {label} has {term.n_levels} "
                            f"levels for {n} observations: its variance and the residual "
                            f"variance are not identifiable (the number of levels must be "
                            f"smaller than the number of observations)")
        if term.q >= n:
            raise DataError(f"the term {label} has {term.q} random effects ({term.k} per level "
                            f"of {term.n_levels}) for {n} observations: its variances and the "
                            f"residual variance are not identifiable")
        q += term.q
    if q < n:
        return
    Z = sp.hstack([sp.csr_matrix((term.Z.ravel(), (np.repeat(np.arange(n), term.k),
                                                   (term.codes[:, None] * term.k
                                                    + np.arange(term.k)).ravel())),
                                 shape=(n, term.q)) for term in terms], format="csc")
    C = (Z.T @ Z).tocsr()
    patterns, names, offset = [], [], 0
    for term in terms:
        for b in range(term.k):
            for a in range(b, term.k):
                E = np.zeros((term.k, term.k))
                E[a, b] = E[b, a] = 1.0
                F = sp.block_diag([sp.csr_matrix((offset, offset)),
                                   sp.kron(sp.identity(term.n_levels), E),
                                   sp.csr_matrix((C.shape[0] - offset - term.q,) * 2)],
                                  format="csr")
                patterns.append(F @ C)
                names.append(f"the variance of {term.coef_names[a]} in {term_label(term)}"
                             if a == b else f"a covariance in {term_label(term)}")
        offset += term.q
    m = len(patterns) + 1
    gram = np.empty((m, m))
    for i, FC in enumerate(patterns):
        for j in range(i, len(patterns)):
            gram[i, j] = gram[j, i] = FC.multiply(patterns[j].T).sum()
        gram[i, -1] = gram[-1, i] = FC.diagonal().sum()
    gram[-1, -1] = n
    scale = 1.0 / np.sqrt(np.diag(gram))
    values, vectors = np.linalg.eigh(scale[:, None] * gram * scale[None, :])
    if values[0] > UNIDENTIFIABLE * values[-1]:
        return
    null = np.abs(vectors[:, 0]) * scale
    involved = [name for name, weight in zip(names + ["the residual variance"], null)
                if weight > 1e-6 * null.max()]
    raise DataError(f"the model has {q} random effects for {n} observations, and "
                    f"{' and '.join(involved)} cannot be told apart: the covariance of y "
                    f"they give is the same (drop or merge a term)")


def _numeric_array(value, name: str, ndim: int) -> np.ndarray:
    """``value`` as a finite float array of ``ndim`` dimensions, or a DataError naming it."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric") from None
    if ndim == 2 and array.ndim == 1:
        array = array[:, None]
    if array.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimension(s), not {array.ndim}")
    if np.isnan(array).any():
        raise DataError(f"{name} has {int(np.isnan(array).sum())} missing (NaN) value(s); "
                        f"arrays are taken as they are: drop incomplete rows first")
    return array


def design_from_arrays(y, X, random, *, fixed_names=None, response: str = "y",
                       drop_rank_deficient: bool = True) -> LMMDesign:
    """A linear mixed model's design from arrays, without a formula.

    Parameters
    ----------
    y : array_like (n,)
    X : array_like (n, p)
        Fixed-effects design (include a column of ones for an intercept).
    random : list of tuples
        One random-effects term each: ``(group, labels)`` for a random intercept,
        ``(group, labels, Z)`` or ``(group, labels, Z, coef_names)`` for correlated
        coefficients on the columns of Z (n × k), as ``(Z | group)``; give
        independent coefficients as separate terms.  ``labels`` (n,) are any
        hashable level labels or integer codes.
    fixed_names : list of str, optional
        Names of X's columns (default ``x0, x1, …``).
    response : str
        The response's name, for reports.
    drop_rank_deficient : bool
        Drop aliased columns of X, as ``build_design`` (and lme4) do.

    The same checks as a formula's design apply (finite values, enough observations,
    at least two levels per grouping factor) and the terms take lme4's order.
    """
    y = _numeric_array(y, "y", 1)
    X = _numeric_array(X, "X", 2)
    n = len(y)
    if X.shape[0] != n:
        raise DataError(f"X has {X.shape[0]} rows; y has {n}")
    names = [f"x{j}" for j in range(X.shape[1])] if fixed_names is None else \
        [str(name) for name in fixed_names]
    if len(names) != X.shape[1] or len(set(names)) != len(names):
        raise DataError(f"fixed_names must name X's {X.shape[1]} columns, each once")
    if not len(random) or isinstance(random[0], str):  # empty, or one term not in a list
        raise DataError("random must be a non-empty list of terms such as "
                        "[('Subject', subject_labels, Z)]")
    terms = []
    for index, spec in enumerate(random):
        if not isinstance(spec, (tuple, list)) or not 2 <= len(spec) <= 4:
            raise DataError(f"random term {index} must be (group, labels[, Z[, coef_names]])")
        group, labels = str(spec[0]), np.asarray(spec[1])
        if labels.shape != (n,):
            raise DataError(f"the labels of random term {group!r} must have shape ({n},), "
                            f"not {labels.shape}")
        if pd.isna(pd.Series(labels)).any():
            raise DataError(f"the labels of random term {group!r} have missing values")
        Z = _numeric_array(spec[2], f"Z of random term {group!r}", 2) if len(spec) > 2 \
            else np.ones((n, 1))
        if Z.shape[0] != n:
            raise DataError(f"Z of random term {group!r} has {Z.shape[0]} rows; y has {n}")
        coef_names = tuple(str(c) for c in spec[3]) if len(spec) > 3 else \
            ((INTERCEPT,) if len(spec) == 2 else tuple(f"z{j}" for j in range(Z.shape[1])))
        if len(coef_names) != Z.shape[1]:
            raise DataError(f"random term {group!r} names {len(coef_names)} coefficient(s) "
                            f"for the {Z.shape[1]} column(s) of its Z")
        codes, levels = group_codes(pd.DataFrame({group: labels}), (group,))
        terms.append(RandomTerm(group=group, group_columns=(group,), coef_names=coef_names,
                                levels=levels, codes=codes, Z=np.ascontiguousarray(Z),
                                expr_spec=None))

    def term_text(columns):  # a report's rendering: the intercept column as "1"
        return " + ".join("1" if c == INTERCEPT else c for c in columns) or "0"

    random_text = " + ".join(f"({term_text(t.coef_names)} | {t.group})" for t in terms)
    spec = FormulaSpec(text=f"{response} ~ {term_text(names)} + {random_text}",
                       response=response, fixed=term_text(names), random=())
    return assemble_design(spec, y, X, names, terms, fixed_spec=None,
                           drop_rank_deficient=drop_rank_deficient)
