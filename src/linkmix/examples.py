"""The seed proteomics example (docs/model.md), fitted in both of its forms.

Owns the seed model's formulas, its link g and the report that compares the
two forms; ``linkmix example`` (the README's main command) prints it.

M2 (constrained): ``x ~ 1 + t2 + m2 + t2m1 + t2m2 + (0 + treatment || replicate)``,
a rank-deficient mean (5 coefficients, 4 cells) identified by the constraint
``t2 == g(sd_1, sd_2, t2m1, t2m2)``.
M1 (linked mean): ``x ~ 1 + m2 + t2m1 + t2m2 + (0 + treatment || replicate)`` plus
the mean term ``(treatment == 2) * g(...)``.
"""

from __future__ import annotations

import warnings

from .errors import RankDeficiencyWarning
from .fitting import lmer
from .comparison import lrt

__all__ = ["SD_1", "SD_2", "LINK", "M2_FORMULA", "M2_CONSTRAINT", "M1_FORMULA", "M1_MEAN",
           "BINDING_FORMULA", "BINDING_CONSTRAINT", "seed_example"]

SD_1 = "`sd[treatment[1]|replicate]`"
SD_2 = "`sd[treatment[2]|replicate]`"
#: g: c₂ as a function of the replicate SDs and b₂₁ (t2m1), b₂₂ (t2m2)
LINK = f"exp(0.5*log(2)**2*({SD_2}**2 - {SD_1}**2)) * (1 + 2**t2m2) / (1 + 2**t2m1)"
M2_FORMULA = "x ~ 1 + t2 + m2 + t2m1 + t2m2 + (0 + treatment || replicate)"
M2_CONSTRAINT = f"t2 == {LINK}"
M1_FORMULA = "x ~ 1 + m2 + t2m1 + t2m2 + (0 + treatment || replicate)"
M1_MEAN = f"(treatment == 2) * {LINK}"
#: the variant with b₂₁ = b₂₂ = 0, in which the link restricts the likelihood
BINDING_FORMULA = "x ~ 1 + t2 + m2 + (0 + treatment || replicate)"
BINDING_CONSTRAINT = f"t2 == exp(0.5*log(2)**2*({SD_2}**2 - {SD_1}**2))"


def seed_example(data, *, n_starts: int = 10):
    """Fit M2 and M1 to one peptide; return the printed report and a JSON-ready record."""
    m2 = lmer(M2_FORMULA, data, constraints=M2_CONSTRAINT, n_starts=n_starts)
    m1 = lmer(M1_FORMULA, data, mean=M1_MEAN, n_starts=n_starts)
    with warnings.catch_warnings():  # X's dependent column is dropped, as intended here
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        cells = lmer(M2_FORMULA, data, REML=False)
    binding = lmer(BINDING_FORMULA, data, constraints=BINDING_CONSTRAINT, n_starts=n_starts)
    test = lrt(m2, cells)
    test_binding = lrt(binding, cells)
    agree = abs(m1.loglik - m2.loglik)
    lines = ["=== M2: rank-deficient mean identified by a constraint ===", str(m2.summary()), "",
             "=== M1: linked mean ===", str(m1.summary()), "",
             f"M1 and M2 maximum log-likelihoods: {m1.loglik:.8f} and {m2.loglik:.8f} "
             f"(difference {agree:.1e})",
             f"Unconstrained cell-means model (lme4's fit): log-likelihood {cells.loglik:.8f}",
             f"M2 against it: {test}", "",
             f"With b21 = b22 = 0 the link restricts: {BINDING_CONSTRAINT}",
             f"  log-likelihood {binding.loglik:.8f}; against the cell-means model: "
             f"{test_binding}", "",
             f"Uniqueness (M2): {m2.verdict}",
             f"Uniqueness (M1): {m1.verdict}"]
    record = {"M2": m2.to_dict(), "M1": m1.to_dict(), "cell_means_loglik": cells.loglik,
              "lrt": test.as_dict(), "binding": binding.to_dict(),
              "lrt_binding": test_binding.as_dict()}
    return "\n".join(lines), record
