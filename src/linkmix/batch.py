"""Many groups, one model: ``fit_groups`` and the executors that run it.

Owns splitting a long table into groups (peptides, proteins), fitting each with
the structure the groups share reused, turning every fit — or its failure —
into tidy rows, and handing chunks of groups to an executor: in process, a local
process pool (the default), or a dask.distributed cluster.

Reuse: the formula is parsed once, and each chunk's columns are built by one
formulaic call (``groupdesign.TableDesign``), which every group's design is cut
from.  A small model (engine pattern, a linked model's constraints) is kept per
layout and refitted with only y changed (``set_response``) for later groups whose
non-response columns are equal.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures import wait as futures_wait
from statistics import NormalDist

import numpy as np
import pandas as pd

from . import arguments
from .constraints import Expression, make_constraint
from .design import required_variables, build_design, require_numeric_response
from .engine import ENGINES
from .groupdesign import TableDesign
from .inference import benjamini_hochberg, check_ddf, expand_contrasts, parse_contrast
from .errors import ArgumentError, DataError, LinkmixError, WorkerLostWarning
from .formula import parse_formula
from .linked import LinkedModel
from .model import LinearMixedModel
from .optimize import CONSTRAINED_METHODS
from .parameters import ParameterSpace
from .threads import one_blas_thread

__all__ = ["fit_groups", "iter_fit_groups", "adjusted_p_values", "GroupSpec", "ROW_COLUMNS",
           "ROW_TYPES"]

#: Per-group columns of ``fit_groups``' result, after the group keys, and their types.
ROW_TYPES = {"parameter": "str", "kind": "str", "estimate": "float", "std_error": "float",
             "df": "float", "t_value": "float", "p_value": "float",
             "ci_lower": "float", "ci_upper": "float", "n": "int", "n_dropped": "int",
             "loglik": "float", "converged": "bool", "singular": "bool", "degenerate": "bool",
             "warning": "str", "constraint_residual": "float", "n_optima": "int",
             "error": "str", "p_adjusted": "float"}
ROW_COLUMNS = list(ROW_TYPES)


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """What to fit to every group (picklable: it travels to worker processes)."""

    formula: str
    constraints: tuple = ()
    mean: object = None
    REML: bool | None = None
    n_starts: int = 1
    method: str = "SLSQP"
    level: float = 0.95
    engine: str = "auto"
    ddf: str = "satterthwaite"
    contrasts: tuple = ()       # (label, text) pairs, text over the fixed effects' names

    @property
    def linked(self) -> bool:
        return bool(self.constraints) or self.mean is not None

    def used_columns(self) -> tuple[str, list[str]]:
        """The response and the other columns the formula reads."""
        spec = parse_formula(self.formula)
        cols = set(required_variables(spec.fixed, "the fixed-effects part"))
        for term in spec.random:
            cols |= required_variables(term.expr, "a random-effects expression")
            cols |= set(term.group)
        cols.discard(spec.response)
        return spec.response, sorted(cols)


class _GroupFitter:
    """Fits one spec to the groups of chunks of a table.

    Each chunk's design is built once (``TableDesign``: one formulaic call for all its
    groups) and cut per group; formulas it cannot cut exactly are built group by
    group.  Models of small layouts are kept and refitted with another response
    when a later group has the same layout: the same complete rows of every
    non-response column the model reads, matched by a hash of the values
    themselves (pandas' hash, so chunks hashed apart agree).
    """

    #: Layouts kept for reuse, and the largest kept (n·(p+1) values): reuse saves
    #: building a model, which matters only for small ones; this bounds the memory.
    MAX_TEMPLATES = 64
    MAX_TEMPLATE_SIZE = 20_000

    def __init__(self, spec: GroupSpec):
        self.spec = spec
        self.formula = parse_formula(spec.formula)
        self.response, self.columns = spec.used_columns()
        self.templates: dict[bytes, object] = {}

    def _model(self, design, data: pd.DataFrame):
        spec = self.spec
        if spec.linked:
            return LinkedModel.from_design(design, data, constraints=list(spec.constraints) or None,
                                           mean=spec.mean, engine=spec.engine)
        return LinearMixedModel.from_design(design, REML=True if spec.REML is None else spec.REML,
                                            engine=spec.engine)

    def _table(self, complete: pd.DataFrame):
        """The chunk's design, or None where each group is built alone (formulas the
        table design does not cut exactly, or columns formulaic cannot read: then each
        group reports the error)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return TableDesign.build(self.formula, complete[[self.response, *self.columns]])
        except LinkmixError:
            return None

    def fit_chunk(self, by, keys, frame, positions) -> dict:
        """Fit the groups of one chunk: ``positions[i]`` are group i's rows of ``frame``
        (consecutive, in group order, index 0…n−1)."""
        spec = self.spec
        missing_cols = [c for c in [self.response, *self.columns] if c not in frame.columns]
        if missing_cols:
            raise LinkmixError(f"unknown column(s) {missing_cols} in the formula "
                               f"{spec.formula!r}")
        y_all = frame[self.response].to_numpy(dtype=float)
        complete_all = ~np.isnan(y_all) & frame[self.columns].notna().all(axis=1).to_numpy()
        complete_rows = np.flatnonzero(complete_all)
        complete = frame.iloc[complete_rows]
        table = self._table(complete)
        # a group's complete rows are consecutive in ``complete``: ends[i] - counts[i]:ends[i]
        counts = np.add.reduceat(complete_all, [pos[0] for pos in positions]) \
            if len(frame) else np.zeros(0, dtype=int)
        ends = np.cumsum(counts)
        # a linked mean may read any column: then every column is part of the layout
        layout = self.columns if spec.mean is None else \
            [c for c in frame.columns if c != self.response and c not in by]
        hashes = pd.util.hash_pandas_object(frame[layout], index=False).to_numpy()
        out = _Columns(by)
        with one_blas_thread(), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            for key, pos, n, stop in zip(keys, positions, counts, ends):
                key = dict(zip(by, key))
                rows = complete_rows[stop - n:stop]
                n_dropped = int(len(pos) - n)
                try:
                    if n == 0:
                        raise LinkmixError("no complete rows")
                    y = y_all[rows]
                    if not np.isfinite(y).all():  # a kept layout's model does not check y again
                        raise LinkmixError(f"the response {self.response!r} has infinite values")
                    signature = hashes[rows].tobytes()
                    model = self.templates.get(signature)
                    if model is None:
                        design = table.group(stop - n, stop, drop_rank_deficient=not spec.linked) \
                            if table is not None else \
                            build_design(self.formula, frame.iloc[rows], missing="raise",
                                         drop_rank_deficient=not spec.linked)
                        model = self._model(design, frame)
                        if (len(self.templates) < self.MAX_TEMPLATES
                                and design.n * (design.p + 1) <= self.MAX_TEMPLATE_SIZE):
                            self.templates[signature] = model
                    else:
                        model.set_response(y)
                    fit = model.fit(n_starts=spec.n_starts, method=spec.method) \
                        if spec.linked else model.fit()
                    out.add_fit(key, fit, n_dropped, spec)
                except Exception as exc:  # a batch never dies because one group failed
                    message = str(exc) if isinstance(exc, LinkmixError) \
                        else f"{type(exc).__name__}: {exc}"
                    out.add_error(key, message, len(pos), n_dropped)
        return out.columns


class _Columns:
    """Rows of the result, accumulated column by column (no DataFrame per group)."""

    def __init__(self, by):
        self.columns = {c: [] for c in [*by, *ROW_COLUMNS]}
        self.by = by

    def _add(self, key, names, kinds, est, se, df, t, p, common, level):
        m = len(names)
        with np.errstate(invalid="ignore"):
            # t quantiles where the rows have df, the normal's elsewhere
            q = np.where(np.isfinite(df), _t_quantile(0.5 + level / 2, df),
                         _normal_quantile(0.5 + level / 2))
        cols = self.columns
        for c in self.by:
            cols[c].extend([key[c]] * m)
        cols["parameter"].extend(names)
        cols["kind"].extend(kinds)
        for name, values in (("estimate", est), ("std_error", se), ("df", df),
                             ("t_value", t), ("p_value", p), ("ci_lower", est - q * se),
                             ("ci_upper", est + q * se)):
            cols[name].extend(np.asarray(values, dtype=float).tolist())
        cols["p_adjusted"].extend([np.nan] * m)
        for name, value in common.items():
            cols[name].extend([value] * m)

    def add_fit(self, key, fit, n_dropped, spec):
        """A fit's rows: its named estimates, then its contrasts, and the per-group
        columns, read off the results object exactly as a single fit reports them; the
        fixed effects' and contrasts' t tests by ``spec.ddf``."""
        residuals = getattr(fit, "constraint_residuals", {})
        names, kinds, estimate, se = fit.natural_estimates()
        df, t, p = (np.full(len(names), np.nan) for _ in range(3))
        fixef = [i for i, kind in enumerate(kinds) if kind == "fixef"]
        if fixef:
            table = fit.t_test_columns(np.eye(len(fixef)), spec.ddf)
            df[fixef], t[fixef], p[fixef] = table["df"], table["t_value"], table["p_value"]
            se = np.array(se, dtype=float)
            se[fixef] = table["std_error"]   # Kenward-Roger's are adjusted
        common = {"n": fit.nobs, "n_dropped": n_dropped, "loglik": fit.loglik,
                  "converged": bool(fit.converged), "singular": bool(fit.singular),
                  "degenerate": bool(fit.degenerate), "warning": fit.message,
                  "constraint_residual": max((abs(v) for v in residuals.values()),
                                             default=np.nan) if residuals else np.nan,
                  "n_optima": len(getattr(fit, "equally_likely", [None])), "error": None}
        self._add(key, names, kinds, estimate, se, df, t, p, common, spec.level)
        if spec.contrasts:
            rows = _contrast_rows(fit, spec)
            self._add(key, [label for label, _ in spec.contrasts],
                      ["contrast"] * len(spec.contrasts), *(rows[c] for c in (
                          "estimate", "std_error", "df", "t_value", "p_value")),
                      common, spec.level)

    def add_error(self, key, message, n, n_dropped):
        cols = self.columns
        for c in self.by:
            cols[c].append(key[c])
        for c in ROW_COLUMNS:
            cols[c].append(np.nan)
        for name, value in {"parameter": None, "kind": None, "n": n, "n_dropped": n_dropped,
                            "converged": False, "singular": False, "degenerate": False,
                            "warning": None, "n_optima": 0, "error": message}.items():
            cols[name][-1] = value


@functools.lru_cache(maxsize=8)
def _normal_quantile(p: float) -> float:
    return NormalDist().inv_cdf(p)


def _t_quantile(p: float, df) -> np.ndarray:
    from scipy.special import stdtrit

    return stdtrit(np.where(np.isfinite(df), df, 1.0), p)


def _contrast_rows(fit, spec) -> dict:
    """The t tests of ``spec.contrasts`` in one fit; NaN for a contrast naming a fixed
    effect this group's design does not have (a level it did not observe, a column
    dropped as aliased)."""
    names = fit.fixed_names
    out = {c: np.full(len(spec.contrasts), np.nan) for c in
           ("estimate", "std_error", "df", "t_value", "p_value")}
    estimable, rows = [], []
    for i, (_, text) in enumerate(spec.contrasts):
        try:
            rows.append(parse_contrast(text, names))
            estimable.append(i)
        except ArgumentError:
            pass
    if estimable:
        table = fit.t_test_columns(np.array(rows), spec.ddf)
        for column in out:
            out[column][estimable] = table[column]
    return out


_WORKER_FITTER: list = []  # in a worker process: the fitter of the last spec (its templates)


def fit_chunk(spec: GroupSpec, by: list[str], keys, frame: pd.DataFrame, positions) -> dict:
    """Fit one chunk of groups (a task for a process pool or a dask worker); a worker
    keeps one fitter, so later chunks of the same spec reuse its layouts."""
    if not _WORKER_FITTER or _WORKER_FITTER[0].spec != spec:
        _WORKER_FITTER[:] = [_GroupFitter(spec)]
    return _WORKER_FITTER[0].fit_chunk(by, keys, frame, positions)


def _sample_design(spec: GroupSpec, data: pd.DataFrame):
    """The design of a sample of the complete rows holding every level of every
    non-numeric column the model reads (its parameter names are every group's could-be
    names: names depend on levels, not on numbers), or None where it cannot be built
    (then each group reports its own errors)."""
    response, columns = spec.used_columns()
    layout = list(data.columns) if spec.mean is not None else [response, *columns]
    complete = data[layout].dropna(subset=[response, *columns])
    rows = set(range(min(len(complete), 50)))
    for column in columns:
        if not pd.api.types.is_numeric_dtype(complete[column]):
            codes = pd.factorize(complete[column])[0]
            rows |= set(np.unique(codes, return_index=True)[1].tolist())
    sample = complete.iloc[sorted(rows)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_design(spec.formula, sample, drop_rank_deficient=False,
                                check_sizes=False), sample
    except LinkmixError:
        return None


def _check_links(spec: GroupSpec, data: pd.DataFrame, sample) -> None:
    """Compile the constraint and mean strings against the names of the sample design,
    so that what fails in every group (a syntax error, text, an unknown function or
    parameter, missing backticks) fails the batch once, before fitting."""
    if not spec.linked or sample is None:
        return
    design, rows = sample
    names = ParameterSpace(design).names
    for constraint in spec.constraints:
        if isinstance(constraint, str):
            make_constraint(constraint, names)
    if isinstance(spec.mean, str):
        Expression(spec.mean, names, {c: rows[c].to_numpy() for c in rows.columns},
                   what="mean")


def progress_bar(total: int, enabled, unit: str = "group", desc: str = "linkmix"):
    """A tqdm bar of ``total`` steps, or None: when not ``enabled`` (default: when stderr
    is a terminal) or tqdm is not installed."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit=unit, desc=desc)


def fit_groups(data: pd.DataFrame, by, formula: str, **options) -> pd.DataFrame:
    """Fit one mixed model per group and return one tidy table.

    Parameters
    ----------
    data : pandas.DataFrame
        Long table, one row per observation.
    by : str or list of str
        Column(s) naming the group (``"peptide"``, ``["ProteinName", "PeptideSequence"]``).
    formula : str
        As ``linkmix.lmer``.
    **options
        ``constraints``, ``mean``, ``REML``, ``n_starts``, ``method``, ``engine`` as
        ``linkmix.lmer`` (constraints must be strings or picklable callables), and
        ``n_jobs``, ``scheduler``, ``chunk_size``, ``progress``, ``level``, ``ddf``,
        ``contrasts`` as ``iter_fit_groups``.

    Returns
    -------
    pandas.DataFrame
        One row per group and parameter (and contrast): the group keys, ``parameter``,
        ``kind``, ``estimate``, ``std_error``, ``df``, ``t_value``, ``p_value`` (t tests of
        fixed effects and contrasts), ``ci_lower``, ``ci_upper``, and per group ``n``,
        ``n_dropped`` (rows with missing values), ``loglik``, ``converged``,
        ``singular``, ``degenerate`` (estimates not uniquely determined), ``warning``
        (the fit's warnings, as ``fit.warnings``), ``constraint_residual``,
        ``n_optima`` (equally likely optima), ``error`` (why a group could not be
        fitted; its row has no parameter), and ``p_adjusted`` (Benjamini–Hochberg across
        the groups, per parameter or contrast).  ``converged``, ``singular`` and
        ``degenerate`` mean exactly what they mean for a single fit.
    """
    by = _group_columns(data, by)
    parts = list(_fit_columns(data, by, formula, **options))
    names = by + ROW_COLUMNS
    table = pd.DataFrame({c: [v for part in parts for v in part[c]] for c in names},
                         columns=names)
    table["p_adjusted"] = adjusted_p_values(table["parameter"], table["p_value"])
    return table


def adjusted_p_values(parameter, p_value) -> np.ndarray:
    """Benjamini–Hochberg adjusted p values of each parameter or contrast across the
    groups (the rows sharing its name), NaN where p is."""
    parameter = pd.Series(np.asarray(parameter, dtype=object))
    p_value = np.asarray(p_value, dtype=float)
    out = np.full(len(p_value), np.nan)
    for rows in parameter.groupby(parameter, sort=False).indices.values():
        out[rows] = benjamini_hochberg(p_value[rows])
    return out


#: Groups and rows per chunk at most: a chunk's design is one formulaic call, so chunks
#: are large, but bounded so that memory stays bounded on any table.
MAX_CHUNK_GROUPS = 1000
MAX_CHUNK_ROWS = 200_000
#: Seconds of work left, as measured on the first chunk, above which ``n_jobs=-1``
#: starts a process pool (starting and feeding one costs about this much).
POOL_WORTH = 2.0


def iter_fit_groups(data: pd.DataFrame, by, formula: str, **options):
    """Fit one mixed model per group, yielding the result rows chunk by chunk, in group
    order, as they are done (for writing a table of any size as it comes).

    Parameters
    ----------
    data, by, formula
        As ``fit_groups``.
    constraints, mean, REML, n_starts, method, engine
        As ``linkmix.lmer``.
    n_jobs : int
        Worker processes: 1 fits in this process; -1 fits the first chunk here and
        starts a pool of all cores only if what is left would take more than
        ``POOL_WORTH`` seconds at that pace; k ≥ 2 always uses k processes.
    scheduler : str or dask.distributed.Client, optional
        A dask.distributed scheduler address (``"tcp://host:8786"``) or client: the
        chunks go to that cluster instead of local processes.
    chunk_size : int, optional
        Groups per chunk (default: ``MAX_CHUNK_GROUPS`` in one process, about four
        chunks of the table per worker in a pool; never more than
        ``MAX_CHUNK_GROUPS`` groups or about ``MAX_CHUNK_ROWS`` rows).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    level : float
        Confidence level of the intervals ``estimate ± q·SE``, q the t quantile with the
        row's df for fixed effects and contrasts, the normal's elsewhere.
    ddf : {"satterthwaite", "kenward-roger", "wald"}
        Degrees of freedom of the fixed effects' and contrasts' t tests
        (``linkmix.inference``; Kenward–Roger needs REML fits).
    contrasts : str or list of str, optional
        Contrasts tested in every group: weighted sums of fixed-effect names
        (``"Condition[T.C2] - Condition[T.C3]"``) or ``"pairwise:Condition"`` for every
        pair of a treatment-coded factor's levels (labelled ``Condition[C3] -
        Condition[C1]``); rows of kind ``contrast``, NaN in a group whose design lacks a
        name the contrast uses.

    Yields
    ------
    pandas.DataFrame
        The rows of ``fit_groups``' result for consecutive groups, with ``p_adjusted``
        missing: the adjustment is across all groups (``adjusted_p_values`` of the whole
        table's ``parameter`` and ``p_value``, as ``fit_groups`` and ``linkmix batch`` do).
    """
    by = _group_columns(data, by)
    for part in _fit_columns(data, by, formula, **options):
        yield pd.DataFrame(part, columns=by + ROW_COLUMNS)


def _group_columns(data, by) -> list[str]:
    """``by`` as a list of columns of ``data``, checked."""
    if not isinstance(data, pd.DataFrame):
        raise LinkmixError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if not isinstance(by, (str, list, tuple)) or not by:
        raise ArgumentError(f"by must name one column or a list of columns, not {by!r}")
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by if c not in data.columns]
    if missing:
        raise LinkmixError(f"unknown grouping column(s) {missing}; the data has "
                           f"{list(map(str, data.columns))}")
    return by


def _fit_columns(data: pd.DataFrame, by, formula: str, *, constraints=None, mean=None,
                 REML: bool | None = None, n_starts: int = 1, method: str = "SLSQP",
                 n_jobs: int = -1, scheduler=None, chunk_size: int | None = None,
                 progress: bool | None = None, level: float = 0.95, engine: str = "auto",
                 ddf: str = "satterthwaite", contrasts=None):
    """``iter_fit_groups``' work for checked ``by`` columns: checks the other arguments,
    then yields each chunk's result columns (lists by column name)."""
    if n_jobs not in (-1, None):
        n_jobs = arguments.count(n_jobs, "n_jobs (-1: all cores)")
    REML = arguments.optional_flag(REML, "REML")
    n_starts = arguments.count(n_starts, "n_starts")
    arguments.choice(method, "method", CONSTRAINED_METHODS)
    arguments.choice(engine, "engine", ENGINES)
    level = arguments.fraction(level, "level")
    progress = arguments.optional_flag(progress, "progress")
    if chunk_size is not None:
        chunk_size = arguments.count(chunk_size, "chunk_size")
    if constraints is not None and not isinstance(constraints, (list, tuple)):
        constraints = [constraints]
    ddf = check_ddf(ddf)
    if ddf == "kenward-roger" and (REML is False or constraints or mean is not None):
        raise ArgumentError("ddf='kenward-roger' needs REML fits; maximum-likelihood and "
                            "linked fits take 'satterthwaite' or 'wald'")
    if isinstance(contrasts, str):
        contrasts = [contrasts]
    if contrasts is not None and not (isinstance(contrasts, (list, tuple))
                                      and all(isinstance(c, str) for c in contrasts)):
        raise ArgumentError("contrasts must be a string or a list of strings such as "
                            "'Condition[T.C2] - Condition[T.C3]' or 'pairwise:Condition'")
    spec = GroupSpec(formula=formula, constraints=tuple(constraints or ()), mean=mean,
                     REML=REML, n_starts=n_starts, method=method, level=level, engine=engine,
                     ddf=ddf)
    response, columns = spec.used_columns()  # a bad formula fails here, once
    missing = [c for c in [response, *columns] if c not in data.columns]
    if missing:
        raise DataError(f"unknown column(s) {missing} in the formula {formula!r}; the data "
                        f"has {list(map(str, data.columns))}")
    require_numeric_response(data[response], response)
    sample = _sample_design(spec, data)
    _check_links(spec, data, sample)
    if contrasts:
        spec = dataclasses.replace(spec, contrasts=expand_contrasts(
            contrasts, data, None if sample is None else sample[0].fixed_names))
    indices = data.groupby(by, sort=True, dropna=False, observed=True).indices
    if not indices:
        return
    keys = [key if isinstance(key, tuple) else (key,) for key in indices]
    # each chunk carries only its groups' rows and the columns the model can read
    wanted = list(data.columns) if mean is not None else \
        [c for c in dict.fromkeys([*by, response, *columns]) if c in data.columns]
    chunks = _Chunks(data[wanted], keys, list(indices.values()))
    cores = os.cpu_count() or 1
    workers = cores if n_jobs in (-1, None) else n_jobs
    bar = progress_bar(len(keys), progress)
    try:
        for part in _run(spec, by, chunks, workers, auto=n_jobs in (-1, None),
                         scheduler=scheduler, chunk_size=chunk_size):
            if bar is not None:
                bar.update(part.pop("__groups__"))
            else:
                del part["__groups__"]
            yield part
    finally:
        if bar is not None:
            bar.close()


class _Chunks:
    """Consecutive groups of a table, cut into tasks on demand (never all at once)."""

    def __init__(self, data: pd.DataFrame, keys: list, positions: list):
        self.data, self.keys, self.positions = data, keys, positions
        self.sizes = np.array([len(p) for p in positions])
        self.next = 0

    @property
    def left(self) -> int:
        return len(self.keys) - self.next

    def take(self, n_groups: int):
        """The next chunk of at most ``n_groups`` groups (and about ``MAX_CHUNK_ROWS``
        rows): (keys, frame indexed 0…, each group's positions in the frame)."""
        start = self.next
        rows_left = np.cumsum(self.sizes[start:start + n_groups])
        stop = start + max(1, int(np.searchsorted(rows_left, MAX_CHUNK_ROWS, side="right")))
        self.next = stop
        chunk = self.positions[start:stop]
        offsets = np.concatenate([[0], np.cumsum(self.sizes[start:stop])])
        frame = self.data.iloc[np.concatenate(chunk)].reset_index(drop=True)
        local = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(chunk))]
        return self.keys[start:stop], frame, local


def _run(spec, by, chunks: _Chunks, workers: int, *, auto: bool, scheduler, chunk_size):
    """Fit every chunk; yield the result columns of each, in order (``__groups__``: how
    many groups it held)."""
    total = chunks.left

    def size_for(n_workers):
        # one process: chunks as large as memory allows (each costs a formulaic call,
        # ~12 ms); a pool: about four per worker of the whole table, so they balance
        if n_workers == 1:
            return chunk_size or MAX_CHUNK_GROUPS
        return chunk_size or min(MAX_CHUNK_GROUPS, max(1, math.ceil(total / (4 * n_workers))))

    if scheduler is not None:
        yield from _run_dask(spec, by, chunks, scheduler, size_for)
        return
    fitter = _GroupFitter(spec)  # released, with its layouts, on return
    if workers == 1 or auto:
        first = chunks.take(min(200, size_for(1)) if auto else size_for(1))
        start = time.perf_counter()
        yield fitter.fit_chunk(by, *first) | {"__groups__": len(first[0])}
        per_group = (time.perf_counter() - start) / len(first[0])
        # the pool pays only when the work left outweighs starting and feeding it
        if workers == 1 or chunks.left * per_group < POOL_WORTH:
            while chunks.left:
                chunk = chunks.take(size_for(1))
                yield fitter.fit_chunk(by, *chunk) | {"__groups__": len(chunk[0])}
            return
    yield from _run_pool(spec, by, chunks, workers, size_for)


def _ordered(submit, chunks: _Chunks, size_for, n_workers, wait_first):
    """Keep about two chunks per worker in flight; yield results in submission order."""
    pending, done, next_out, index = {}, {}, 0, 0
    while chunks.left or pending:
        while chunks.left and len(pending) < 2 * n_workers:
            chunk = chunks.take(size_for(n_workers))
            pending[submit(chunk)] = (index, len(chunk[0]))
            index += 1
        for future in wait_first(list(pending)):
            i, n = pending.pop(future)
            done[i] = future.result() | {"__groups__": n}
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1


def _run_pool(spec, by, chunks, workers, size_for):
    """``_ordered`` over a local process pool that survives its workers' deaths (the
    out-of-memory killer, a crash in a compiled library): the chunks in flight when a
    worker died are fitted again in a new pool; a chunk lost twice runs alone in a
    process of its own, and if that dies too its groups are reported as failed.  Every
    group is in the output once."""
    pool = [ProcessPoolExecutor(max_workers=workers)]
    lost = collections.Counter()   # chunk → times its pool broke under it

    def submit(chunk):
        return _Attempt(chunk, lost, pool, workers, spec, by)

    def wait_first(attempts):
        finished = futures_wait([a.future for a in attempts],
                                return_when=FIRST_COMPLETED).done
        return [a for a in attempts if a.future in finished]

    try:
        yield from _ordered(submit, chunks, size_for, workers, wait_first)
    finally:
        pool[0].shutdown(wait=False, cancel_futures=True)


class _Attempt:
    """A chunk submitted to a pool that may break: ``result()`` is the chunk's columns,
    fitted again as ``_run_pool`` says when the pool broke under it."""

    def __init__(self, chunk, lost, pool, workers, spec, by):
        self.chunk, self.lost, self.pool, self.workers = chunk, lost, pool, workers
        self.spec, self.by = spec, by
        self.key = tuple(map(str, chunk[0][:1])) + (len(chunk[0]),)
        self.future = self._submit()

    def _submit(self):
        self.submitted_to = self.pool[0]
        try:
            return self.submitted_to.submit(fit_chunk, self.spec, self.by, *self.chunk)
        except BrokenProcessPool:
            self._renew()
            self.submitted_to = self.pool[0]
            return self.submitted_to.submit(fit_chunk, self.spec, self.by, *self.chunk)

    def _renew(self):
        """A new pool in place of the broken one this attempt ran in (the first of its
        attempts to find it broken replaces it; every attempt shares the list)."""
        if self.pool[0] is self.submitted_to:
            self.submitted_to.shutdown(wait=False, cancel_futures=True)
            self.pool[0] = ProcessPoolExecutor(max_workers=self.workers)

    def result(self):
        while True:
            try:
                return self.future.result()
            except BrokenProcessPool:
                self.lost[self.key] += 1
                warnings.warn(f"a worker process died (killed, perhaps out of memory) while "
                              f"fitting {len(self.chunk[0])} groups from {self.chunk[0][0]}; "
                              f"fitting them again", WorkerLostWarning, stacklevel=2)
                if self.lost[self.key] >= 2:
                    return _alone(self.spec, self.by, self.chunk)
                self._renew()
                self.future = self._submit()


def _alone(spec, by, chunk) -> dict:
    """A chunk fitted in a process of its own (one that killed its workers twice); its
    groups are reported as failed if that process dies too."""
    with ProcessPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(fit_chunk, spec, by, *chunk).result()
        except BrokenProcessPool:
            pass
    keys, _, positions = chunk
    out = _Columns(by)
    for key, rows in zip(keys, positions):
        out.add_error(dict(zip(by, key)), "the process fitting this group died twice "
                      "(killed, perhaps out of memory): not fitted", len(rows), 0)
    return out.columns


def _run_dask(spec, by, chunks, scheduler, size_for):
    try:
        from distributed import Client, wait
    except ImportError:
        raise LinkmixError("scheduler= needs dask.distributed: pip install 'linkmix[dask]'") \
            from None
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        yield from _ordered(
            lambda chunk: client.submit(fit_chunk, spec, by, *chunk, pure=False), chunks,
            size_for, n_workers, lambda fs: wait(fs, return_when="FIRST_COMPLETED").done)
    finally:
        if own:
            client.close()
