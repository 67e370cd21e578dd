"""The ``linkmix`` command: fit models from data files on the command line.

Owns argument parsing, checking and presentation only; fitting is ``linkmix.lmer``,
the seed example is ``linkmix.examples.seed_example``.  Every bad input ends in one
``linkmix: error: …`` line and exit status 2, and options and output paths are
checked before any data is read or fitted; a batch in which no group could be
fitted exits with status 1 after writing its table.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import sys
import warnings

from .errors import ArgumentError, DataError, LinkmixError

__all__ = ["main"]

#: Output formats by file ending, and the module each needs (None: always there).
TABLE_FORMATS = {".csv": None, ".tsv": None, ".parquet": "pyarrow", ".pq": "pyarrow"}


def _whole(minimum: int):
    """argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    return parse


def _jobs(text: str) -> int:
    """argparse type of --jobs: -1 (all cores) or a count of at least 1."""
    value = _whole(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be -1 (all cores) or at least 1, not 0")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors in linkmix's one-line form, exit status 2."""

    def error(self, message):
        self.exit(2, f"linkmix: error: {message} (see {self.prog} --help)\n")


def _writable(path: str, option: str, formats=None) -> str:
    """Check up front that ``path`` can be written (its folder exists, its ending is a
    supported format whose writer is installed), so no fit is lost at the end."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ArgumentError(f"{option} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ArgumentError(f"{option} {path!r}: the folder {folder!r} is not writable")
    if os.path.isdir(path):
        raise ArgumentError(f"{option} {path!r} is a folder; give a file name")
    if formats is not None:
        ending = os.path.splitext(path)[1].lower()
        if ending not in formats:
            raise ArgumentError(f"{option} {path!r}: unsupported format {ending or '(none)'}; "
                                f"use one of {', '.join(formats)}")
        _require_module(formats[ending], f"{option} {path!r}")
    return path


def _require_module(module: str | None, purpose: str) -> None:
    if module is not None and importlib.util.find_spec(module) is None:
        raise ArgumentError(f"{purpose} needs the Python package {module!r}, which is not "
                            f"installed (pip install {module})")


def _write_json(record: dict, path: str) -> None:
    from .results import json_text
    with open(path, "w") as fh:
        fh.write(json_text(record) + "\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="linkmix", description="Mixed-effects models with linked fixed effects and "
                                    "variance components.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fit = sub.add_parser("fit", help="fit a linear mixed model to a data file",
                         description="Fit a linear mixed model (REML unless --ml) and print "
                                     "its summary.")
    fit.add_argument("data", help="CSV, TSV or Parquet file; quoted CSV columns are factors")
    fit.add_argument("--formula", "-f", required=True,
                     help="lme4 formula, e.g. 'Reaction ~ Days + (Days | Subject)'")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--json", metavar="FILE", help="also write the fit as JSON to FILE")
    fit.add_argument("--factor", action="append", default=[], metavar="COLUMN",
                     help="read COLUMN as a factor (repeatable)")
    fit.add_argument("--optimizer", choices=("bobyqa", "cobyqa"), default="bobyqa")
    fit.add_argument("--engine", choices=("auto", "blocked", "cholmod"), default="auto",
                     help="factorisation of Λ'Z'ZΛ + I (default: chosen by size)")
    fit.add_argument("--missing", choices=("drop", "raise"), default="drop",
                     help="rows with missing values: drop and report (default) or fail")
    links = fit.add_argument_group(
        "links", "constraints between parameters, or a mean depending on them; either makes "
                 "the fit maximum likelihood on the full deviance")
    links.add_argument("--constraint", "-c", action="append", default=[], metavar="EQ",
                       help="'lhs == rhs', 'lhs >= rhs' or 'lhs <= rhs' over parameter names "
                            "(backticks around names such as `sd[Days|Subject]`); repeatable")
    links.add_argument("--mean", metavar="EXPR",
                       help="a term added to the mean, over parameter names and data columns")
    links.add_argument("--starts", type=_whole(1), default=1, metavar="K",
                       help="number of starts; K > 1 reports every distinct optimum")
    links.add_argument("--method", choices=("SLSQP", "trust-constr"), default="SLSQP")
    links.add_argument("--seed", type=_whole(0), default=0, help="seed of the spread starts")
    fit.add_argument("--lrt", nargs="?", const="", metavar="FORMULA",
                     help="also fit an unconstrained ML model (FORMULA, default the same "
                          "formula) and print the likelihood-ratio test against it")

    nlfit = sub.add_parser(
        "nlfit", help="fit a nonlinear mixed model (Laplace approximation, as nlmer)",
        description="Fit a nonlinear mixed model by maximum likelihood with the Laplace "
                    "approximation and print its summary.")
    nlfit.add_argument("data", help="CSV, TSV or Parquet file")
    nlfit.add_argument("--formula", "-f", required=True,
                       help="'conc ~ SSfol(Dose, Time, lKe, lKa, lCl)' (covariates, then "
                            "parameter names), optionally with lme4's third part")
    nlfit.add_argument("--random", "-r", action="append", default=None, metavar="TERM",
                       help="random effects on model parameters: 'lKa + lCl | Subject' or "
                            "'lKe + lKa + lCl || Subject'; repeatable")
    nlfit.add_argument("--fixed", action="append", default=[], metavar="PARAM=RHS",
                       help="covariates of a model parameter, e.g. 'lCl=1 + Wt'; repeatable")
    nlfit.add_argument("--start", action="append", default=[], metavar="NAME=VALUE",
                       help="start value of a fixed effect; repeatable")
    nlfit.add_argument("--constraint", "-c", action="append", default=[], metavar="EQ",
                       help="a constraint over parameter names, as for 'fit'; repeatable")
    nlfit.add_argument("--starts", type=_whole(1), default=1, metavar="K")
    nlfit.add_argument("--nagq", type=_whole(1), default=1, metavar="K",
                       help="adaptive Gauss-Hermite nodes (one scalar random effect); "
                            "1: Laplace")
    nlfit.add_argument("--factor", action="append", default=[], metavar="COLUMN")
    nlfit.add_argument("--json", metavar="FILE", help="also write the fit as JSON to FILE")

    batch = sub.add_parser(
        "batch", help="fit one model per group (peptide, protein) of a long table",
        description="Fit the same model to every group and write one tidy table: a row per "
                    "group and parameter (estimate, SE, CI) with per-group n, rows dropped, "
                    "logLik, convergence, singularity, constraint residual, number of optima "
                    "and, for groups that failed, why.")
    batch.add_argument("data", help="CSV, TSV or Parquet file, one row per observation")
    batch.add_argument("--by", action="append", required=True, metavar="COLUMN",
                       help="column naming the group; repeat for several (e.g. ProteinName "
                            "and PeptideSequence)")
    batch.add_argument("--formula", "-f", required=True)
    batch.add_argument("--output", "-o", required=True,
                       help="results file: .csv, .tsv or .parquet")
    batch.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    batch.add_argument("--constraint", "-c", action="append", default=[], metavar="EQ")
    batch.add_argument("--mean", metavar="EXPR")
    batch.add_argument("--starts", type=_whole(1), default=1, metavar="K")
    batch.add_argument("--jobs", "-j", type=_jobs, default=-1,
                       help="worker processes: -1 (default) all cores, or a count")
    batch.add_argument("--dask", metavar="ADDRESS",
                       help="send the groups to a dask.distributed scheduler, e.g. "
                            "tcp://10.0.0.5:8786")
    batch.add_argument("--log2", action="append", default=[], metavar="COLUMN",
                       help="add log2COLUMN = log2(COLUMN), non-positive values missing "
                            "(MSstats' Intensity); repeatable")
    batch.add_argument("--factor", action="append", default=[], metavar="COLUMN")
    batch.add_argument("--plots", metavar="DIR", help="write a volcano plot per --effect here")
    batch.add_argument("--effect", action="append", default=[], metavar="PARAMETER",
                       help="parameter for the volcano plot (default: the last fixed effect)")
    batch.add_argument("--chunk-size", type=_whole(1), metavar="GROUPS",
                       help="groups per chunk: each chunk is written as soon as it is fitted")
    batch.add_argument("--no-progress", action="store_true")

    example = sub.add_parser(
        "example", help="the seed proteomics example: fit M1 and M2 to one peptide",
        description="Simulate (or read) one peptide of the seed experiment, fit the linked "
                    "model in both forms (M2: constraint; M1: linked mean) and print both "
                    "with the uniqueness verdict.")
    example.add_argument("--data", help="a peptide's CSV (columns treatment, modification, "
                                        "replicate, x); default: simulated")
    example.add_argument("--seed", type=_whole(0), default=1, help="simulation seed")
    example.add_argument("--three-optima", action="store_true",
                         help="simulate a peptide whose link equation has three roots")
    example.add_argument("--starts", type=_whole(1), default=10, metavar="K")
    example.add_argument("--json", metavar="FILE", help="write both fits as JSON to FILE")
    return parser


def _fit(args) -> int:
    from .io import read_table
    from .fitting import lmer
    from .comparison import lrt

    if args.json:
        _writable(args.json, "--json")
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
            general = lmer(args.lrt or args.formula, data, REML=False, engine=args.engine,
                           missing=args.missing)
            test = lrt(fit, general)
    print(fit.summary())
    if test is not None:
        print()
        print(test)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if args.json:
        record = fit.to_dict()
        if test is not None:
            record["lrt"] = test.as_dict()
        _write_json(record, args.json)
    return 0


def _pairs(items, option, form):
    """``NAME=VALUE`` items of a repeatable option as a dict (``form`` is how the help
    spells them)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key.strip() or not value.strip():
            raise ArgumentError(f"{option} {item!r} must read {form}")
        out[key.strip()] = value.strip()
    return out


def _numbers(pairs: dict, option: str) -> dict:
    out = {}
    for key, text in pairs.items():
        try:
            out[key] = float(text)
        except ValueError:
            raise ArgumentError(f"{option} {key}={text!r}: {text!r} is not a number") from None
    return out


def _nlfit(args) -> int:
    from .io import read_table
    from .fitting import nlmer

    if args.json:
        _writable(args.json, "--json")
    start = _numbers(_pairs(args.start, "--start", "NAME=VALUE"), "--start") or None
    fixed = _pairs(args.fixed, "--fixed", "PARAM=RHS")
    data = read_table(args.data, factors=args.factor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = {"nAGQ": args.nagq} if args.nagq > 1 else {}
        fit = nlmer(args.formula, data, random=args.random, fixed=fixed, start=start,
                    constraints=args.constraint or None, n_starts=args.starts, **options)
    print(fit.summary())
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if args.json:
        fit.to_json(args.json)
    return 0


def _batch(args) -> int:
    import numpy as np
    import pandas as pd

    from .batch import iter_fit_groups
    from .io import read_table

    _writable(args.output, "--output", TABLE_FORMATS)
    if args.plots:
        _require_module("matplotlib", "--plots")
        if os.path.exists(args.plots) and not os.path.isdir(args.plots):
            raise ArgumentError(f"--plots {args.plots!r} is a file, not a folder")
    if args.dask:
        _require_module("distributed", "--dask")
    data = read_table(args.data, factors=args.factor)
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
    parts = iter_fit_groups(data, args.by, args.formula, constraints=args.constraint or None,
                            mean=args.mean, REML=False if args.ml else None,
                            n_starts=args.starts, n_jobs=args.jobs, scheduler=args.dask,
                            chunk_size=args.chunk_size,
                            progress=False if args.no_progress else None)
    out = args.output
    tally = _BatchTally(args.by)
    kept = []  # the plots need the whole table; otherwise each chunk is written and let go
    with _TableWriter(out, data[args.by]) as writer:
        for part in parts:
            writer.write(part)
            tally.add(part)
            if args.plots:
                kept.append(part)
    print(tally.report())
    print(f"wrote {out}")
    if tally.groups and not tally.fitted:
        print(f"linkmix: error: no group could be fitted (first error: {tally.first_error})",
              file=sys.stderr)
        return 1
    if args.plots:
        from .plots import volcano
        results = pd.concat(kept, ignore_index=True)
        os.makedirs(args.plots, exist_ok=True)
        known = set(results["parameter"].dropna())
        unknown = [e for e in args.effect if e not in known]
        if unknown:
            raise ArgumentError(f"--effect {unknown[0]!r} is not a parameter of the fits; "
                                f"they have {sorted(known)}")
        effects = args.effect or list(results.loc[results["kind"] == "fixef",
                                                  "parameter"].drop_duplicates().tail(1))
        for effect in effects:
            path = os.path.join(args.plots, f"volcano_{_safe(effect)}.png")
            volcano(results, effect).savefig(path, dpi=120)
            print(f"wrote {path}")
    return 0


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


class _TableWriter:
    """Writes a result table chunk by chunk: CSV/TSV appended, Parquet as row groups of
    one schema (fixed here, since a chunk may hold no warning or error at all)."""

    def __init__(self, path: str, keys):
        self.path = path
        self.parquet = path.lower().endswith((".parquet", ".pq"))
        self.sep = "\t" if path.lower().endswith(".tsv") else ","
        self.keys = keys
        self.writer = None
        self.started = False

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

    def write(self, part) -> None:
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

    def __exit__(self, *exc) -> None:
        if not self.started:  # no group at all: the columns alone
            if self.parquet:
                self.writer = self._parquet_writer()
            else:
                import pandas as pd

                from .batch import ROW_COLUMNS
                pd.DataFrame(columns=[*self.keys.columns, *ROW_COLUMNS]).to_csv(
                    self.path, index=False, sep=self.sep)
        if self.writer is not None:
            self.writer.close()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _example(args) -> int:
    from . import datasets
    from .examples import seed_example

    if args.json:
        _writable(args.json, "--json")
    if args.data:
        from .io import read_table
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
        _write_json(record, args.json)
    return 0


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "fit":
            return _fit(args)
        if args.command == "example":
            return _example(args)
        if args.command == "nlfit":
            return _nlfit(args)
        if args.command == "batch":
            return _batch(args)
    except LinkmixError as exc:
        print(f"linkmix: error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
