"""The ``linkmix`` command: fit models from data files on the command line.

Owns the arguments: parsing, and every check that needs no data; what each
subcommand then does is ``linkmix.commands``.  Every bad input ends in one
``linkmix: error: …`` line and exit status 2, and options and output paths are
checked before any data is read or fitted; a batch in which no group could be
fitted exits with status 1 after writing its table.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys

from .errors import ArgumentError, LinkmixError

#: linkmix.inference.DDF_METHODS, written out: --help must not import numpy
DDF_CHOICES = ("satterthwaite", "kenward-roger", "wald")
#: linkmix.engine.ENGINES, written out for the same reason
ENGINE_CHOICES = ("auto", "blocked", "blocked-sparse", "cholmod", "cholmod-supernodal")

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
    fit.add_argument("--optimizer", choices=("auto", "bobyqa", "cobyqa", "lbfgs"),
                     default="auto", help="default: L-BFGS-B with the exact gradient for "
                     "costly evaluations, else BOBYQA")
    fit.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                     help="factorisation of Λ'Z'ZΛ + I (default: the fastest, measured)")
    fit.add_argument("--ddf", choices=DDF_CHOICES, default=None,
                     help="degrees of freedom of the fixed effects' t tests (default: "
                          "satterthwaite; kenward-roger needs a REML fit)")
    fit.add_argument("--missing", choices=("drop", "raise"), default="drop",
                     help="rows with missing values: drop and report (default) or fail")
    fit.add_argument("--contrast", action="append", default=[], metavar="EXPR",
                     help="test a contrast of the fixed effects, e.g. 'Condition[T.C2] - "
                          "Condition[T.C3]', or every pair of a factor's levels with "
                          "'pairwise:Condition' (repeatable; t tests by --ddf)")
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

    sample = sub.add_parser(
        "sample", help="draw from the posterior of a linear, linked or nonlinear model",
        description="Fit the model by maximum likelihood, then draw from the posterior of its "
                    "parameters on the same likelihood (random effects integrated out; NUTS, "
                    "or emcee's ensemble for several modes), print a summary and write the "
                    "draws as NetCDF (ArviZ).")
    sample.add_argument("data", help="CSV, TSV or Parquet file")
    sample.add_argument("--formula", "-f", required=True,
                        help="lme4 formula, or with --random an nlmer formula such as "
                             "'y ~ SSlogis(age, Asym, xmid, scal)'")
    sample.add_argument("--random", "-r", action="append", default=None, metavar="TERM",
                        help="a nonlinear model's random-effects term, as for 'nlfit'")
    sample.add_argument("--constraint", "-c", action="append", default=[], metavar="EQ",
                        help="a constraint over parameter names, as for 'fit'; repeatable")
    sample.add_argument("--mean", metavar="EXPR", help="a linked mean term, as for 'fit'")
    sample.add_argument("--starts", type=_whole(1), default=5, metavar="K",
                        help="starts of the maximum-likelihood fit (walkers start at every "
                             "equally likely optimum it finds)")
    sample.add_argument("--prior", "-p", action="append", default=[], metavar="NAME=PRIOR",
                        help="e.g. 'sigma=half_normal(1)'; repeatable (others default)")
    sample.add_argument("--solve-for", action="append", default=None, metavar="NAME",
                        help="a parameter the equality constraints are solved for")
    sample.add_argument("--draws", type=_whole(1), default=1000, metavar="N",
                        help="kept draws per walker")
    sample.add_argument("--tune", type=_whole(0), default=None, metavar="N",
                        help="discarded draws per walker (default --draws)")
    sample.add_argument("--chains", type=_whole(1), default=4, metavar="K")
    sample.add_argument("--walkers", type=_whole(2), default=None, metavar="K",
                        help="walkers per chain (default max(16, 4 × parameters))")
    sample.add_argument("--seed", type=_whole(0), default=None)
    sample.add_argument("--sampler", choices=("auto", "nuts", "ensemble"), default="auto",
                        help="NUTS, or emcee's ensemble (auto: the ensemble when the fit has "
                             "several equally likely optima or inequality constraints)")
    sample.add_argument("--target-accept", type=float, default=0.95, metavar="P",
                        help="NUTS's target acceptance (Stan's adapt_delta; default 0.95)")
    sample.add_argument("--random-effects", action="store_true",
                        help="also draw the random effects from their conditional "
                             "distribution")
    sample.add_argument("--output", "-o", required=True, metavar="FILE.nc",
                        help="NetCDF file for the draws (arviz.from_netcdf reads it)")
    sample.add_argument("--plots", metavar="DIR",
                        help="write trace.png and pair.png to DIR")
    sample.add_argument("--factor", action="append", default=[], metavar="COLUMN")
    sample.add_argument("--missing", choices=("drop", "raise"), default="drop")

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
    batch.add_argument("--contrast", action="append", default=[], metavar="EXPR",
                       help="test a contrast in every group, e.g. 'Condition[T.C2] - "
                            "Condition[T.C3]', or every pair of a factor's levels with "
                            "'pairwise:Condition' (repeatable); p_adjusted is "
                            "Benjamini-Hochberg across groups")
    batch.add_argument("--ddf", choices=DDF_CHOICES, default=None,
                       help="degrees of freedom of the t tests (default: satterthwaite)")
    batch.add_argument("--plots", metavar="DIR",
                       help="write a volcano plot per --effect here (default: the first "
                            "--contrast, else the first fixed effect after the intercept)")
    batch.add_argument("--effect", action="append", default=[], metavar="PARAMETER",
                       help="parameter for the volcano plot (default: the first --contrast, "
                            "else the first fixed effect after the intercept)")
    batch.add_argument("--resume", action="store_true",
                       help="continue an interrupted run: keep the groups already in "
                            "OUTPUT.partial and fit the rest")
    batch.add_argument("--chunk-size", type=_whole(1), metavar="GROUPS",
                       help="groups per chunk: each chunk is written as soon as it is fitted")
    batch.add_argument("--no-progress", action="store_true")

    dataset = sub.add_parser(
        "dataset", help="write a dataset shipped with linkmix to a CSV file",
        description="Write a shipped dataset (R's sleepstudy, Dyestuff, Penicillin, "
                    "Orthodont, Orange, Theoph; MSstats' DDA example) to a CSV file, to try "
                    "the other commands on; without a name, list them.")
    dataset.add_argument("name", nargs="?", help="the dataset; omit to list them")
    dataset.add_argument("--output", "-o", metavar="FILE.csv",
                         help="where to write it (default: NAME.csv here)")

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


def _check(args) -> None:
    """Every check that needs no data, before any is read: output paths, optional
    packages, and ``NAME=VALUE`` options (replaced by their parsed values)."""
    if getattr(args, "json", None):
        _writable(args.json, "--json")
    if args.command == "nlfit":
        args.start = _numbers(_pairs(args.start, "--start", "NAME=VALUE"), "--start") or None
        args.fixed = _pairs(args.fixed, "--fixed", "PARAM=RHS")
    if args.command == "sample":
        _writable(args.output, "--output", {".nc": "h5netcdf"})
        _require_module("emcee", "sampling")
        _require_module("arviz", "sampling")
        if args.plots:
            _require_module("matplotlib", "--plots")
            if os.path.exists(args.plots) and not os.path.isdir(args.plots):
                raise ArgumentError(f"--plots {args.plots!r} is a file, not a folder")
        args.prior = _pairs(args.prior, "--prior", "NAME=PRIOR")
        if args.random is not None and args.mean is not None:
            raise ArgumentError("--mean is for linear models; a nonlinear model's mean is its "
                                "formula")
    if args.command == "dataset" and args.name is not None:
        args.output = _writable(args.output or f"{args.name}.csv", "--output", {".csv": None})
    if args.command == "batch":
        _writable(args.output, "--output", TABLE_FORMATS)
        if args.plots:
            _require_module("matplotlib", "--plots")
            if os.path.exists(args.plots) and not os.path.isdir(args.plots):
                raise ArgumentError(f"--plots {args.plots!r} is a file, not a folder")
        if args.dask:
            _require_module("distributed", "--dask")


#: Subcommands that leave nothing behind once their output is written: one fit, no
#: worker pools, no temporary files.
SINGLE_FITS = frozenset({"fit", "nlfit"})


def main(argv=None, *, fast_exit: bool = False) -> int:
    """Run ``linkmix`` with ``argv`` (default: the command line); the exit status.

    With ``fast_exit`` (the installed program), a single fit ends the process as soon
    as its output is flushed: the interpreter's teardown of pandas, pyarrow and scipy
    takes 0.1–0.4 s, more than many fits, and has nothing of linkmix's to clean up."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        _check(args)
        commands = _import_commands(own_process=fast_exit)
        status = commands.run(args)
    except LinkmixError as exc:
        print(f"linkmix: error: {_in_flags(str(exc))}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("linkmix: interrupted; nothing was written", file=sys.stderr)
        status = 130
    if fast_exit and args.command in SINGLE_FITS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


#: The library's spelling of an option in its messages → the command line's.
_FLAGS = [("refit with REML=True", "refit without --ml"), ("drop REML=True", "drop --ml"),
          ("(REML=False)", "(--ml)"), ("REML=False", "--ml"),
          ("ddf='kenward-roger'", "--ddf kenward-roger"), ("ddf='satterthwaite'",
                                                          "--ddf satterthwaite"),
          ("ddf='wald'", "--ddf wald"), ("n_starts", "--starts")]


def _in_flags(message: str) -> str:
    """A library message with its options spelled as the command line takes them."""
    for library, flag in _FLAGS:
        message = message.replace(library, flag)
    return message


def _import_commands(own_process: bool):
    """``linkmix.commands``: the one deferred import of linkmix's own code.

    The subcommands load numpy, pandas, scipy and formulaic (about 0.9 s), which --help
    and a bad option do not need.  In the program's ``own_process`` the cyclic garbage
    collector is paused meanwhile (its passes over the new modules' objects cost about
    70 ms and find nothing to free) and those objects are then left out of its later
    passes (``gc.freeze``): they live as long as the process.
    """
    if not own_process:
        from . import commands
        return commands
    gc.disable()
    try:
        from . import commands
    finally:
        gc.freeze()
        gc.enable()
    return commands


def console() -> None:
    """The installed ``linkmix`` program."""
    sys.exit(main(fast_exit=True))


if __name__ == "__main__":
    console()
