"""linkmix: mixed-effects models whose fixed effects and variance components may be linked.

Public names only; each lives in the module of its pipeline stage and is imported on
first use (PEP 562), so ``import linkmix`` and the ``linkmix`` command load only what
they need: a batch never loads the nonlinear models, plots or scipy.stats.
"""

import importlib

from .errors import (ArgumentError, ConvergenceWarning, DataError, FitError, FormulaError,
                     LinkmixError, MissingDataWarning, RankDeficiencyWarning)

__version__ = "0.1.0"

#: Public name → the module that owns it.
_OWNERS = {
    "datasets": None, "plots": None, "fit_groups": "batch", "iter_fit_groups": "batch", "Constraint": "constraints",
    "ConstraintError": "constraints", "parse_formula": "formula", "read_table": "io",
    "LinkedModel": "linked", "LinearMixedModel": "model", "lmer": "fitting",
    "NonlinearMixedModel": "nonlinear", "nlmer": "fitting", "LinkedResults": "linked_results",
    "LMMResults": "results", "LRTResult": "comparison", "NLMMResults": "results",
    "lrt": "comparison", "confint": "intervals", "posterior_summary": "sampling",
    "bayes_factor": "sampling",
    "ModelFunctionError": "ssmodels", "NonlinearFunction": "ssmodels",
    "SELF_STARTING": "ssmodels", "user_model": "ssmodels"}

__all__ = [*_OWNERS, "LinkmixError", "FormulaError", "DataError", "FitError", "ArgumentError",
           "MissingDataWarning", "RankDeficiencyWarning", "ConvergenceWarning", "__version__"]


def __getattr__(name: str):
    if name not in _OWNERS:
        raise AttributeError(f"module 'linkmix' has no attribute {name!r}")
    owner = _OWNERS[name]
    module = importlib.import_module(f".{owner or name}", __name__)
    value = module if owner is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_OWNERS))
