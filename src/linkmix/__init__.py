"""linkmix: mixed-effects models whose fixed effects and variance components may be linked.

Public names only; each lives in the module of its pipeline stage.
"""

from .errors import (ArgumentError, ConvergenceWarning, DataError, FitError, FormulaError,
                     LinkmixError, MissingDataWarning, RankDeficiencyWarning)
from . import datasets
from .batch import fit_groups
from .constraints import Constraint, ConstraintError
from .formula import parse_formula
from .io import read_table
from .linked import LinkedModel
from .model import LinearMixedModel, lmer
from .nonlinear import NonlinearMixedModel, nlmer
from .results import LinkedResults, LMMResults, LRTResult, NLMMResults, lrt
from .ssmodels import ModelFunctionError, NonlinearFunction, SELF_STARTING, user_model

__version__ = "0.1.0"

__all__ = ["lmer", "nlmer", "fit_groups", "datasets", "NonlinearMixedModel", "NLMMResults", "NonlinearFunction",
           "SELF_STARTING", "user_model", "ModelFunctionError", "LinearMixedModel", "LMMResults", "LinkedModel", "LinkedResults",
           "Constraint", "ConstraintError", "lrt", "LRTResult", "parse_formula", "read_table",
           "LinkmixError", "FormulaError", "DataError", "FitError", "ArgumentError",
           "MissingDataWarning",
           "RankDeficiencyWarning", "ConvergenceWarning", "__version__"]
