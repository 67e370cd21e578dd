"""linkmix: mixed-effects models whose fixed effects and variance components may be linked.

Public names only; each lives in the module of its pipeline stage.
"""

from .errors import (ConvergenceWarning, DataError, FitError, FormulaError, LinkmixError,
                     MissingDataWarning, RankDeficiencyWarning)
from .formula import parse_formula
from .io import read_table
from .model import LinearMixedModel, lmer
from .results import LMMResults

__version__ = "0.1.0"

__all__ = ["lmer", "LinearMixedModel", "LMMResults", "parse_formula", "read_table",
           "LinkmixError", "FormulaError", "DataError", "FitError", "MissingDataWarning",
           "RankDeficiencyWarning", "ConvergenceWarning", "__version__"]
