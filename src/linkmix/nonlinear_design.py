"""The specification and numbers of a nonlinear mixed model.

Owns reading a nonlinear formula (``response ~ Model(covariates, params)``, with
lme4's optional third part), the random parts over model parameters, each model
parameter's fixed-effects formula, and the design built from them
(``NLMMDesign``).  The data go through the linear models' own rules
(``linkmix.design``: required columns, the one missing-data rule, model matrices,
grouping codes, lme4's term order); names are looked up, never evaluated.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .design import (RandomEffectsLayout, RandomTerm, group_codes, lme4_term_order, materialize,
                     model_frame, rename_intercept, require_columns, require_numeric_response)
from .errors import DataError, FormulaError
from .formula import FormulaSpec, split_top_level, strip_outer_parens, check_name, check_terms
from .ssmodels import SELF_STARTING, NonlinearFunction

__all__ = ["NLMMDesign", "parse_nonlinear_formula", "build_nlmm_design"]


@dataclass
class NLMMDesign(RandomEffectsLayout):
    """The numbers of a nonlinear mixed model.

    Attributes
    ----------
    y : ndarray (n,)
    covariates : tuple of ndarray
        The model function's covariate columns.
    model : NonlinearFunction
    params : tuple of str
        Names of the model parameters φ, in the model function's order.
    fixed_blocks : list of ndarray
        For each model parameter j, its fixed-effects matrix X_j (n × p_j).
    fixed_names : list of str
        Names of β: ``Asym`` for an intercept-only parameter, ``lCl:Wt`` for a covariate.
    terms : list of RandomTerm
        Random-effects terms; coefficient c of term t shifts parameter ``term_params[t][c]``.
    """

    formula: FormulaSpec
    y: np.ndarray
    covariates: tuple
    model: NonlinearFunction
    params: tuple
    fixed_blocks: list
    fixed_names: list
    fixed_specs: dict
    terms: list
    term_params: list
    covariate_names: tuple = ()
    n_dropped: int = 0
    row_index: pd.Index | None = None
    beta_slices: list = field(default_factory=list)
    dropped_columns: list = field(default_factory=list)  # never: kept for a common interface

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return len(self.fixed_names)

    @functools.cached_property
    def _constant(self) -> list[bool]:
        """Whether each model parameter has only an intercept (φ_j = β_j)."""
        return [self.fixed_specs[j].strip() == "1" for j in self.params]

    @property
    def X(self) -> np.ndarray:
        """β's design in φ space, stacked by parameter ((n·s) × p): used for rank checks."""
        out = np.zeros((self.n * len(self.params), self.p))
        for j, (block, sl) in enumerate(zip(self.fixed_blocks, self.beta_slices)):
            out[j * self.n:(j + 1) * self.n, sl] = block
        return out

    def phi(self, beta) -> np.ndarray:
        """φ = Xβ (n × s), each model parameter from its own fixed-effects block (the
        model adds the random effects)."""
        phi = np.empty((self.n, len(self.params)))
        for j, (block, sl) in enumerate(zip(self.fixed_blocks, self.beta_slices)):
            # an intercept-only parameter is one number for every observation
            phi[:, j] = beta[sl.start] if self._constant[j] else block @ beta[sl]
        return phi


# ---- specification ----------------------------------------------------------------

_MODEL_CALL = re.compile(r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*\((?P<args>.*)\)\s*$", re.S)


def parse_nonlinear_formula(text: str):
    """``"y ~ SSlogis(age, Asym, xmid, scal) [~ random part]"`` → (response, name, args, third).

    The optional third part is lme4's: model parameters, their covariates
    (``Asym:Type``) and random terms such as ``Asym | Tree`` or ``(0 + lKe | Subject)``.  The response, the model's name and its
    arguments must be names: they are looked up, never evaluated.
    """
    if not isinstance(text, str) or "~" not in text:
        raise FormulaError("a nonlinear formula reads 'response ~ Model(covariates, params)', "
                           f"got {text!r}")
    parts = split_top_level(text, "~")
    if len(parts) not in (2, 3):
        raise FormulaError(f"a nonlinear formula has one '~' (or two, with lme4's third part): "
                           f"{text!r}")
    match = _MODEL_CALL.match(parts[1])
    if not parts[0].strip() or not match:
        raise FormulaError(f"cannot read {text!r}: expected 'response ~ Model(arg, …)'")
    response = check_name(parts[0], "the response")
    args = [a.strip() for a in split_top_level(match["args"], ",")]
    if any(not a for a in args):
        raise FormulaError(f"empty argument in {parts[1].strip()!r}")
    args = [check_name(a, f"argument of {match['name']}") for a in args]
    return response, match["name"], args, (parts[2] if len(parts) == 3 else None)


def _third_part(third: str, params) -> tuple[list[str], dict[str, list[str]]]:
    """lme4's third part: its random terms, and the covariates of model parameters that
    terms such as ``Asym:Type`` add (as ``fixed={"Asym": "1 + Type"}`` would)."""
    random, covariates = [], {}
    chunks = [third] if "(" not in third and "|" in third else split_top_level(third, "+")
    for chunk in chunks:
        inner = strip_outer_parens(chunk)
        text = (inner if inner is not None else chunk).strip()
        if "|" in text:
            random.append(text)
            continue
        if text in ("0", "1", "") or text in params:
            continue
        sides = [side.strip() for side in text.split(":")]
        if len(sides) == 2 and (sides[0] in params) != (sides[1] in params):
            param, covariate = sides if sides[0] in params else sides[::-1]
            covariates.setdefault(param, []).append(
                check_name(covariate, f"the covariate of {param} in {text!r}"))
            continue
        raise FormulaError(f"{text!r} in the third part of the formula is neither a model "
                           f"parameter {list(params)}, a parameter's covariate such as "
                           f"'{params[0]}:x', nor a random term")
    return random, covariates


def _parse_random(spec, params) -> list[tuple[tuple[str, ...], tuple[str, ...], bool, str]]:
    """Random specs like ``"lKa + lCl | Subject"`` → [(params, group columns, independent,
    the spec's text)]."""
    specs = [spec] if isinstance(spec, str) else list(spec or [])
    out = []
    for text in specs:
        if not isinstance(text, str):
            raise FormulaError(f"a random part must be text such as 'Asym | Tree', not "
                               f"{type(text).__name__}")
        double = split_top_level(text, "||")
        independent = len(double) == 2
        sides = double if independent else split_top_level(text, "|")
        if len(sides) != 2:
            raise FormulaError(f"random part {text!r} must read 'params | group'")
        names = [n.strip() for n in split_top_level(sides[0], "+")]
        names = [n for n in names if n not in ("0", "1")]
        unknown = [n for n in names if n not in params]
        if unknown or not names:
            raise FormulaError(f"random part {text!r} names {unknown or 'no'} model parameters; "
                               f"the model's parameters are {list(params)}")
        if not sides[1].strip():
            raise FormulaError(f"random part {text!r} has no grouping factor after '|'")
        group = tuple(check_name(g, f"grouping factor of the random part {text!r}")
                      for g in sides[1].split(":"))
        out.append((tuple(names), group, independent, text))
    if not out:
        raise FormulaError("a nonlinear mixed model needs a random part, e.g. "
                           "random='Asym | Tree'")
    return out


def build_nlmm_design(formula: str, data: pd.DataFrame, random=None, fixed=None,
                      model: NonlinearFunction | None = None, missing: str = "drop"
                      ) -> NLMMDesign:
    """Check the data against a nonlinear specification and build its numbers.

    Parameters
    ----------
    formula : str
        ``"conc ~ SSfol(Dose, Time, lKe, lKa, lCl)"``; optionally with lme4's third
        part (``"... ~ Asym | Tree"``) instead of ``random``.
    random : str or list of str
        Random terms over model parameters: ``"lKa + lCl | Subject"`` (correlated),
        ``"lKe + lKa + lCl || Subject"`` (independent).
    fixed : dict, optional
        Fixed-effects formula per model parameter, e.g. ``{"lCl": "1 + Wt"}``;
        default ``"1"`` (one fixed effect per parameter).
    model : NonlinearFunction, optional
        The model function when the formula's function is not a self-starting model.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    response, name, args, third = parse_nonlinear_formula(formula)
    if model is None:
        if name not in SELF_STARTING:
            raise FormulaError(f"unknown model function {name!r}: use one of "
                               f"{sorted(SELF_STARTING)} or pass model=linkmix.user_model(...)")
        model = SELF_STARTING[name]
    n_cov = len(model.covariates)
    if len(args) != n_cov + len(model.params):
        raise FormulaError(f"{name} takes {n_cov} covariate(s) {list(model.covariates)} and "
                           f"{len(model.params)} parameter(s) {list(model.params)}; "
                           f"got {len(args)} arguments")
    cov_cols, params = args[:n_cov], tuple(args[n_cov:])
    if third is not None:
        if random is not None:
            raise FormulaError("give the random part either in the formula or as random=, "
                               "not both")
        random, third_covariates = _third_part(third, params)
    else:
        third_covariates = {}
    random_specs = _parse_random(random, params)
    if fixed is not None and not isinstance(fixed, dict):
        raise FormulaError(f"fixed= must map model parameters to formulas, e.g. "
                           f"{{'lCl': '1 + Wt'}}, not {type(fixed).__name__}")
    fixed = dict(fixed or {})
    both = sorted(set(fixed) & set(third_covariates))
    if both:
        raise FormulaError(f"the covariates of {both} are given both in the formula and in "
                           f"fixed=; give them once")
    fixed.update({j: " + ".join(["1", *cols]) for j, cols in third_covariates.items()})
    bad = [k for k, v in fixed.items() if not isinstance(v, str)]
    if bad:
        raise FormulaError(f"fixed= formulas must be text such as '1 + Wt'; got "
                           f"{ {k: fixed[k] for k in bad} }")
    unknown = [k for k in fixed if k not in params]
    if unknown:
        raise FormulaError(f"fixed= names {unknown}, not model parameters {list(params)}")
    fixed_specs = {j: fixed.get(j, "1") for j in params}

    used = {response, *cov_cols}
    require_columns(data, sorted(used), f"the nonlinear model {formula!r}")
    for j, rhs in fixed_specs.items():
        columns = check_terms(rhs, f"the fixed effects of {j}")
        require_columns(data, sorted(columns), f"the fixed effects of {j} ({rhs!r})")
        used |= columns
    for _, group, _, text in random_specs:
        require_columns(data, list(group), f"the random part {text!r}")
        used |= set(group)
    require_numeric_response(data[response], response)
    for col in cov_cols:
        if not pd.api.types.is_numeric_dtype(data[col]):
            raise DataError(f"column {col!r} must be numeric; it has dtype {data[col].dtype}")
    data, n_dropped = model_frame(data, used, missing)
    y = data[response].to_numpy(dtype=float)
    covariates = tuple(data[c].to_numpy(dtype=float) for c in cov_cols)
    if not np.all(np.isfinite(y)) or not all(np.all(np.isfinite(c)) for c in covariates):
        raise DataError("the response and covariates must be finite")

    blocks, names, slices, start = [], [], [], 0
    for j in params:
        if fixed_specs[j].strip() == "1":
            block, cols = np.ones((len(y), 1)), [j]
        else:
            matrix = materialize(fixed_specs[j], data, f"the fixed effects of {j}")
            block = np.asarray(matrix, dtype=float)
            cols = [f"{j}:{c}" for c in rename_intercept(list(matrix.columns))]
        blocks.append(block)
        names.extend(cols)
        slices.append(slice(start, start + block.shape[1]))
        start += block.shape[1]

    terms, term_params = [], []
    for names_j, group, independent, _ in random_specs:
        codes, levels = group_codes(data, group)
        if len(levels) < 2:
            raise DataError(f"grouping factor {':'.join(group)!r} has only {len(levels)} level")
        split = [(nm,) for nm in names_j] if independent else [names_j]
        for coefs in split:
            terms.append(RandomTerm(group=":".join(group), group_columns=group, coef_names=coefs,
                                    levels=levels, codes=codes,
                                    Z=np.ones((len(y), len(coefs))), expr_spec=None,
                                    independent=independent))
            term_params.append([params.index(c) for c in coefs])
    order = lme4_term_order(terms)
    term_params = [term_params[terms.index(t)] for t in order]
    spec = FormulaSpec(text=formula, response=response, fixed="", random=())
    return NLMMDesign(formula=spec, y=y, covariates=covariates, model=model, params=params,
                      fixed_blocks=blocks, fixed_names=names, fixed_specs=fixed_specs,
                      terms=order, term_params=term_params, covariate_names=tuple(cov_cols),
                      n_dropped=n_dropped, row_index=data.index, beta_slices=slices)
