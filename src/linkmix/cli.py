"""The ``linkmix`` command: fit models from data files on the command line.

Owns argument parsing and presentation only; fitting is ``linkmix.lmer``.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .errors import LinkmixError

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linkmix", description="Mixed-effects models with linked fixed effects and "
                                    "variance components.")
    sub = parser.add_subparsers(dest="command", required=True)
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
    return parser


def _fit(args) -> int:
    from .io import read_table
    from .model import lmer

    data = read_table(args.data, factors=args.factor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = lmer(args.formula, data, REML=not args.ml, engine=args.engine,
                   missing=args.missing, optimizer=args.optimizer)
    print(fit.summary())
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if args.json:
        fit.to_json(args.json)
    return 0


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "fit":
            return _fit(args)
    except LinkmixError as exc:
        print(f"linkmix: error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
