"""Comparing fits: the likelihood-ratio test of a restricted model within a general one.

Owns the test's degrees of freedom (free parameters: parameters less the rank of
the equality constraints and any unidentified fixed-effects directions), its
statistic and p-value, for plain, constrained, linked and nonlinear ML fits alike.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .errors import FitError
from .results import P_FLOOR

__all__ = ["LRTResult", "lrt"]


def _p_text(p: float) -> str:
    """'= 0.0123', or '< 2.2e-16' below what double precision resolves."""
    return f"< {P_FLOOR:g}" if p < P_FLOOR else f"= {p:.4g}"


@dataclass
class LRTResult:
    """Likelihood-ratio test of a restricted model against a more general one."""

    statistic: float
    df: int
    p_value: float
    loglik_restricted: float
    loglik_general: float
    note: str = ""

    def __str__(self) -> str:
        text = (f"Likelihood-ratio test: chi2 = {self.statistic:.4f}, df = {self.df}, "
                f"p {_p_text(self.p_value)}  (logLik {self.loglik_restricted:.4f} vs "
                f"{self.loglik_general:.4f})")
        return text + (f"\n{self.note}" if self.note else "")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def lrt(restricted, general) -> LRTResult:
    """Likelihood-ratio test of ``restricted`` (e.g. a constrained fit) within ``general``.

    Both must be maximum-likelihood fits of the same observations.  The degrees
    of freedom are the difference in free parameters (parameters less the rank
    of the equality constraints and any unidentified fixed-effects directions);
    the order of the two fits does not matter.  With df = 0 the restriction does
    not reduce the model (it only identifies it) and no p-value is given.
    """
    for fit in (restricted, general):
        if getattr(fit, "REML", False):
            raise FitError("likelihood-ratio tests need maximum-likelihood fits; refit with "
                           "REML=False")
    if restricted.nobs != general.nobs or not np.allclose(restricted.design.y, general.design.y):
        raise FitError("likelihood-ratio tests need fits of the same observations")
    if restricted.n_free > general.n_free:
        restricted, general = general, restricted
    df = general.n_free - restricted.n_free
    statistic = max(0.0, 2.0 * (general.loglik - restricted.loglik))
    note = ""
    if df == 0:
        p_value = math.nan
        note = ("df = 0: the restriction does not reduce the number of free parameters (it "
                "only identifies the model); the likelihoods should be equal")
    else:
        import scipy.stats  # here, not at import: scipy.stats costs 0.3 s to import
        p_value = float(scipy.stats.chi2.sf(statistic, df))
        if any(fit.singular for fit in (restricted, general)):
            note = "a variance parameter is on its boundary: the chi-squared p-value is conservative"
    return LRTResult(statistic, int(df), p_value, restricted.loglik, general.loglik, note)
