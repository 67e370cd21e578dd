"""What each ``linkmix`` subcommand does, once its arguments are checked.

Owns reading the data, fitting, printing and writing for ``fit``, ``nlfit``,
``batch``, ``sample`` and ``example``.  ``linkmix.cli`` owns the arguments and their checks and
hands over here, so ``linkmix --help`` and a bad option never load the numerical
stack.  Each subcommand imports what only it needs (the batch machinery, the linked and
nonlinear models, plots, the sampler's summaries, the seed example), so a plain ``fit``
loads none of them.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import signal
import sys
import threading
import warnings

import numpy as np
import pandas as pd

from .errors import ArgumentError, DataError
from .fitting import lmer, nlmer
from .io import atomic_output, read_table
from .results import json_text

__all__ = ["run"]


def write_json(record: dict, path: str) -> None:
    """``record`` as strict JSON (RFC 8259: null, never NaN) in ``path``, whole or not
    at all (``atomic_output``)."""
    with atomic_output(path) as temporary, open(temporary, "w") as fh:
        fh.write(json_text(record) + "\n")


def fit_command(args) -> int:
    """``linkmix fit``."""
    data = read_table(args.data, factors=args.factor)
    linked = bool(args.constraint) or args.mean is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if linked:
            fit = lmer(args.formula, data, constraints=args.constraint or None, mean=args.mean,
                       n_starts=args.starts, method=args.method, seed=args.seed,
                       engine=args.engine, missing=args.missing)
        else:
            fit = lmer(args.formula, data, REML=not args.ml and args.lrt is None,
                       engine=args.engine, missing=args.missing, optimizer=args.optimizer)
        test = None
        if args.lrt is not None:
            from .comparison import lrt
            general = lmer(args.lrt or args.formula, data, REML=False, engine=args.engine,
                           missing=args.missing)
            test = lrt(fit, general)
    contrasts = None
    if args.contrast:
        from .inference import expand_contrasts
        from .results import format_p, format_table

        pairs = expand_contrasts(args.contrast, data, fit.fixed_names)
        contrasts = fit.contrast([text for _, text in pairs], args.ddf)
        contrasts.index = [label for label, _ in pairs]
    print(fit.summary(args.ddf))
    if contrasts is not None:
        shown = contrasts.assign(p_value=[format_p(p) for p in contrasts["p_value"]])
        print(f"\nContrasts ({args.ddf or fit.default_ddf} t tests):")
        print(format_table(shown))
    if test is not None:
        print()
        print(test)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if args.json:
        record = fit.to_dict()
        record["fixef_tests"] = fit.tests_record(args.ddf)
        if contrasts is not None:
            record["contrasts"] = {label: row.to_dict() for label, row in contrasts.iterrows()}
        if test is not None:
            record["lrt"] = test.as_dict()
        write_json(record, args.json)
    return 0


def nlfit_command(args) -> int:
    """``linkmix nlfit``."""
    data = read_table(args.data, factors=args.factor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = {"nAGQ": args.nagq} if args.nagq > 1 else {}
        fit = nlmer(args.formula, data, random=args.random, fixed=args.fixed,
                    start=args.start,
                    constraints=args.constraint or None, n_starts=args.starts, **options)
    print(fit.summary())
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if args.json:
        fit.to_json(args.json)
    return 0


def _batch_columns(args):
    """The columns ``linkmix batch`` reads: the formula's, the group keys and the
    ``--log2`` sources; None (every column) where a linked mean may read any."""
    from .batch import GroupSpec

    if args.mean is not None:
        return None
    response, used = GroupSpec(args.formula).used_columns()
    created = {f"log2{col}" for col in args.log2}
    return ({response, *used} - created) | set(args.by) | set(args.log2)


@contextlib.contextmanager
def _interrupt_after():
    """Ctrl-C within the block takes effect when it ends: a chunk written half would be
    in the partial file without being counted (the message said nothing was written,
    and ``--resume`` would keep a group with part of its rows)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def batch_command(args) -> int:
    """``linkmix batch``."""
    from .batch import adjusted_p_values, iter_fit_groups

    data = read_table(args.data, factors=args.factor, columns=_batch_columns(args))
    for col in args.log2:
        if col not in data.columns:
            raise DataError(f"--log2: unknown column {col!r}; the data has columns "
                            f"{list(map(str, data.columns))}")
        values = pd.to_numeric(data[col], errors="coerce")
        bad = data[col][values.isna() & data[col].notna()]
        if len(bad):
            raise DataError(f"--log2 {col}: the column must hold numbers; row "
                            f"{bad.index[0]} has {bad.iloc[0]!r}")
        with np.errstate(divide="ignore", invalid="ignore"):
            data[f"log2{col}"] = np.where(values > 0, np.log2(values), np.nan)
    writer = _TableWriter(args.output, data[args.by])
    done = writer.resume() if args.resume else None
    if done is not None:
        before = len(data)
        data = data[~_group_keys(data, args.by).isin(done)]
        print(f"resuming: {len(done)} groups already in {writer.path} "
              f"({before - len(data)} rows) are skipped")
    parts = iter_fit_groups(data, args.by, args.formula, constraints=args.constraint or None,
                            mean=args.mean, REML=False if args.ml else None,
                            n_starts=args.starts, n_jobs=args.jobs, scheduler=args.dask,
                            chunk_size=args.chunk_size, ddf=args.ddf or "satterthwaite",
                            contrasts=args.contrast or None,
                            progress=False if args.no_progress else None)
    out = args.output
    tally = _BatchTally(args.by)
    try:
        # the arguments are checked and the first chunk fitted before any file is made
        first = next(parts, None) if len(data) else None
        with writer:
            for part in itertools.chain([] if first is None else [first], parts):
                with _interrupt_after():  # a chunk is in the file whole, and counted
                    writer.write(part)
                    tally.add(part)
            writer.adjusted = adjusted_p_values(*writer.tests)
    except KeyboardInterrupt:
        print(f"linkmix: interrupted: {tally.groups} groups fitted"
              + (f" and {writer.resumed} resumed" if writer.resumed else "")
              + (f" are in {writer.path}; run the same command with --resume to fit the "
                 f"rest" if writer.started else "; nothing was written"), file=sys.stderr)
        return 130
    print(tally.report())
    if writer.resumed:
        print(f"{writer.resumed} groups fitted by the interrupted run are kept")
    print(f"wrote {out}")
    if tally.groups and not tally.fitted:
        print(f"linkmix: error: no group could be fitted (first error: {tally.first_error})",
              file=sys.stderr)
        return 1
    if args.plots:
        results = pd.read_parquet(out) if writer.parquet else pd.read_csv(out, sep=writer.sep)
        os.makedirs(args.plots, exist_ok=True)
        known = set(results["parameter"].dropna())
        unknown = [e for e in args.effect if e not in known]
        if unknown:
            raise ArgumentError(f"--effect {unknown[0]!r} is not a parameter of the fits; "
                                f"they have {sorted(known)}")
        from .plots import volcano

        effects = args.effect or _default_effect(results)
        for effect in effects:
            path = os.path.join(args.plots, f"volcano_{_safe(effect)}.png")
            with atomic_output(path) as temporary:
                volcano(results, effect).savefig(temporary, dpi=120)
            print(f"wrote {path}")
    return 0


def _default_effect(results: pd.DataFrame) -> list[str]:
    """The volcano plot drawn without ``--effect``: the first contrast, else the first
    fixed effect after the intercept (the first condition against the reference)."""
    for kind in ("contrast", "fixef"):
        names = results.loc[results["kind"] == kind, "parameter"].drop_duplicates()
        names = [n for n in names if n != "(Intercept)"]
        if names:
            return names[:1]
    return []


class _BatchTally:
    """The batch's summary, counted chunk by chunk (a group's rows are in one chunk)."""

    def __init__(self, by):
        self.by = by
        self.groups = self.fitted = self.dropped = self.not_converged = self.degenerate = 0
        self.errors = collections.Counter()
        self.first_error = None

    def add(self, part) -> None:
        per_group = part.drop_duplicates(self.by)
        failed = per_group["error"].notna()
        fitted = ~failed
        self.groups += len(per_group)
        self.fitted += int(fitted.sum())
        self.dropped += int(per_group["n_dropped"].fillna(0).sum())
        self.not_converged += int((~per_group["converged"].astype(bool) & fitted).sum())
        self.degenerate += int((per_group["degenerate"].astype(bool) & fitted).sum())
        self.errors.update(per_group.loc[failed, "error"])
        if self.first_error is None and failed.any():
            self.first_error = per_group.loc[failed, "error"].iloc[0]

    def report(self) -> str:
        lines = [f"{self.groups} groups: {self.fitted} fitted, {self.groups - self.fitted} "
                 f"failed; {self.dropped} rows with missing values dropped; "
                 f"{self.not_converged} not converged, {self.degenerate} degenerate"]
        lines += [f"  {count} × {message}" for message, count in self.errors.most_common(5)]
        return "\n".join(lines)


def _group_keys(frame: pd.DataFrame, by) -> pd.Series:
    """Each row's group as one text key (the values of ``by`` joined), comparable between
    a table and a results file read back (where a numeric key may come back as text)."""
    return frame[list(by)].astype(str).agg("\x1f".join, axis=1)


class _TableWriter:
    """Writes a result table chunk by chunk to ``path + ".partial"``: CSV/TSV appended,
    Parquet as row groups of one schema (fixed here, since a chunk may hold no warning
    or error at all).  Once every group is written, the table with ``p_adjusted``
    filled in is moved to ``path`` (``atomic_output``) and the partial file removed.

    An interrupted run (Ctrl-C, or any failure after groups were written) keeps the
    partial file for ``--resume``; a run that wrote nothing leaves no file.  ``tests``
    holds every row's parameter and p value, for the adjustment across groups."""

    def __init__(self, path: str, keys):
        self.final = path
        self.path = path + ".partial"  # p_adjusted is known only once every group is fitted
        self.parquet = path.lower().endswith((".parquet", ".pq"))
        self.sep = "\t" if path.lower().endswith(".tsv") else ","
        self.keys = keys
        self.writer = None
        self.started = False
        self.resumed = 0      # groups an earlier run wrote
        self.tests = ([], [])
        self.adjusted = None  # set by the caller when every chunk is written

    def resume(self):
        """The groups (``_group_keys``) an interrupted run already wrote to the partial
        file, whose rows are kept; None where there is none."""
        if not os.path.exists(self.path):
            return None
        from .batch import ROW_COLUMNS

        try:
            done = pd.read_parquet(self.path) if self.parquet else \
                pd.read_csv(self.path, sep=self.sep, dtype={c: str for c in self.keys.columns},
                            keep_default_na=False, na_values=[""])
        except Exception as exc:
            raise DataError(f"--resume: cannot read {self.path} ({exc}); remove it to start "
                            f"again") from None
        expected = [*self.keys.columns, *ROW_COLUMNS]
        if list(done.columns) != expected:
            raise DataError(f"--resume: {self.path} holds other columns than this command "
                            f"writes ({list(done.columns)[:6]}…); remove it to start again")
        self.tests[0].extend(done["parameter"].tolist())
        self.tests[1].extend(pd.to_numeric(done["p_value"]).tolist())
        keys = _group_keys(done, self.keys.columns).unique()
        self.resumed = len(keys)
        if self.parquet and len(done):   # a Parquet file is not appended to: copied on
            previous = self.path + ".resumed"
            os.replace(self.path, previous)
            self.write(done, record=False)
            os.remove(previous)
        self.started = len(done) > 0
        return set(keys)

    def __enter__(self):
        return self

    def _parquet_writer(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .batch import ROW_TYPES

        arrow = {"str": pa.string(), "float": pa.float64(), "int": pa.int64(),
                 "bool": pa.bool_()}
        self.schema = pa.Schema.from_pandas(self.keys.head(0), preserve_index=False)
        for name, kind in ROW_TYPES.items():
            self.schema = self.schema.append(pa.field(name, arrow[kind]))
        return pq.ParquetWriter(self.path, self.schema)

    def write(self, part, record: bool = True) -> None:
        if record:
            self.tests[0].extend(part["parameter"].tolist())
            self.tests[1].extend(part["p_value"].tolist())
        if self.parquet:
            import pyarrow as pa

            if self.writer is None:
                self.writer = self._parquet_writer()
            self.writer.write_table(pa.Table.from_pandas(part, schema=self.schema,
                                                         preserve_index=False))
        else:
            part.to_csv(self.path, mode="a" if self.started else "w", header=not self.started,
                        index=False, sep=self.sep)
        self.started = True

    def __exit__(self, kind, *exc) -> None:
        if not self.started and kind is None:  # no group at all: the columns alone
            if self.parquet:
                self.writer = self._parquet_writer()
            else:
                from .batch import ROW_COLUMNS
                pd.DataFrame(columns=[*self.keys.columns, *ROW_COLUMNS]).to_csv(
                    self.path, index=False, sep=self.sep)
            self.started = True
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if kind is not None or self.adjusted is None:
            if not self.started and os.path.exists(self.path):
                os.remove(self.path)   # nothing written: nothing left behind
            return
        with atomic_output(self.final) as temporary:
            self._fill_adjusted(temporary)
        os.remove(self.path)

    def _fill_adjusted(self, target: str) -> None:
        """Copy the written table to ``target`` with ``p_adjusted`` filled in, row by
        row as it was written (values are copied as text or Arrow data: unchanged)."""
        values = self.adjusted
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            source = pq.ParquetFile(self.path)
            column = source.schema_arrow.get_field_index("p_adjusted")
            start = 0
            with pq.ParquetWriter(target, source.schema_arrow) as out:
                for batch in source.iter_batches():
                    part = values[start:start + batch.num_rows]
                    start += batch.num_rows
                    table = pa.Table.from_batches([batch])
                    out.write_table(table.set_column(
                        column, "p_adjusted", pa.array(part, pa.float64(), mask=np.isnan(part))))
            return
        import csv

        with open(self.path, newline="") as source, open(target, "w", newline="") as out:
            reader = csv.reader(source, delimiter=self.sep)
            writer = csv.writer(out, delimiter=self.sep, lineterminator="\n")
            header = next(reader)
            column = header.index("p_adjusted")
            writer.writerow(header)
            for row, value in zip(reader, values.tolist()):
                row[column] = "" if value != value else repr(value)
                writer.writerow(row)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def example_command(args) -> int:
    """``linkmix example``."""
    from . import datasets
    from .examples import seed_example

    if args.data:
        data = datasets.add_seed_columns(read_table(args.data))
        source = args.data
    elif args.three_optima:
        data = datasets.simulate_peptide(**datasets.THREE_OPTIMA)
        source = f"simulated peptide with three optima ({datasets.THREE_OPTIMA})"
    else:
        data = datasets.simulate_peptide(args.seed)
        source = f"simulated peptide (seed {args.seed})"
    report, record = seed_example(data, n_starts=args.starts)
    print(f"Data: {source}, {len(data)} observations\n")
    print(report)
    if args.json:
        write_json(record, args.json)
    return 0


def dataset_command(args) -> int:
    """``linkmix dataset``: a shipped dataset as a CSV file (or their names)."""
    from . import datasets

    if args.name is None:
        print("\n".join(datasets.names()))
        return 0
    if args.name not in datasets.names():
        raise ArgumentError(f"unknown dataset {args.name!r}; shipped: {datasets.names()}")
    with atomic_output(args.output) as temporary:
        datasets.load(args.name).to_csv(temporary, index=False)
    print(f"wrote {args.output}")
    return 0


def sample_command(args) -> int:
    """``linkmix sample``: the maximum-likelihood fit, then its posterior draws."""
    from .plots import pair, trace
    from .sampling import posterior_summary

    data = read_table(args.data, factors=args.factor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        links = dict(constraints=args.constraint or None, n_starts=args.starts,
                     missing=args.missing)
        if args.random is not None:
            fit = nlmer(args.formula, data, random=args.random, **links)
        elif args.constraint or args.mean is not None:
            fit = lmer(args.formula, data, mean=args.mean, **links)
        else:   # the posterior does not depend on REML; the start is the ML fit
            fit = lmer(args.formula, data, REML=False, missing=args.missing)
        idata = fit.sample(draws=args.draws, tune=args.tune, chains=args.chains,
                           walkers=args.walkers, seed=args.seed, prior=args.prior,
                           solve_for=args.solve_for, random_effects=args.random_effects,
                           sampler=args.sampler, target_accept=args.target_accept)
    print(posterior_summary(idata))
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    with atomic_output(args.output) as temporary:
        idata.to_netcdf(temporary)
    print(f"\nDraws written to {args.output}")
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        for name, figure in (("trace", trace(idata)), ("pair", pair(idata))):
            with atomic_output(os.path.join(args.plots, f"{name}.png")) as temporary:
                figure.savefig(temporary, dpi=110)
        print(f"Trace and pair plots written to {args.plots}")
    return 0


def run(args) -> int:
    """Run the subcommand ``args.command`` with checked arguments; its exit status."""
    return {"fit": fit_command, "nlfit": nlfit_command, "batch": batch_command,
            "example": example_command, "sample": sample_command,
            "dataset": dataset_command}[args.command](args)
