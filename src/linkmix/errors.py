"""Exception and warning types: every bad input names its problem through one of these."""

__all__ = ["LinkmixError", "FormulaError", "DataError", "FitError", "ArgumentError",
           "MissingDataWarning", "RankDeficiencyWarning", "ConvergenceWarning",
           "WorkerLostWarning"]


class LinkmixError(ValueError):
    """Base class of linkmix's input and fitting errors."""


class FormulaError(LinkmixError):
    """The formula cannot be parsed or does not fit the data."""


class DataError(LinkmixError):
    """The data cannot be used with the formula (unknown column, wrong type, …)."""


class FitError(LinkmixError):
    """The model could not be fitted."""


class ArgumentError(LinkmixError, TypeError):
    """An option has the wrong type or value (``REML="yes"``, ``n_starts=2.5``)."""


class MissingDataWarning(UserWarning):
    """Rows with missing values were dropped; the count is in the fit's ``n_dropped``."""


class RankDeficiencyWarning(UserWarning):
    """Columns of a rank-deficient fixed-effects design were dropped."""


class ConvergenceWarning(UserWarning):
    """The optimiser stopped without meeting its convergence checks."""


class WorkerLostWarning(UserWarning):
    """A batch's worker process died; the groups it was fitting are fitted again."""
