"""asv benchmarks of linked fits of one seed peptide (16 observations).

``time_*`` hold only the timed call; compare with ``lmm.FitML`` and with lme4's
unconstrained fit of the same data in ``benchmarks/compare_lme4.py``.
"""

import warnings

import linkmix
from linkmix import datasets
from linkmix.examples import M1_FORMULA, M1_MEAN, M2_CONSTRAINT, M2_FORMULA


class SeedPeptide:
    timeout = 300

    def setup(self):
        warnings.simplefilter("ignore")
        self.data = datasets.simulate_peptide(1)
        self.three = datasets.simulate_peptide(**datasets.THREE_OPTIMA)

    def time_unconstrained(self):
        linkmix.lmer(M2_FORMULA, self.data, REML=False)

    def time_constrained_m2(self):
        linkmix.lmer(M2_FORMULA, self.data, constraints=M2_CONSTRAINT)

    def time_constrained_m2_with_ses(self):
        linkmix.lmer(M2_FORMULA, self.data, constraints=M2_CONSTRAINT).params

    def time_linked_mean_m1(self):
        linkmix.lmer(M1_FORMULA, self.data, mean=M1_MEAN)

    def time_three_optima_10_starts(self):
        linkmix.lmer(M2_FORMULA, self.three, constraints=M2_CONSTRAINT, n_starts=10)

    def track_optima_found_10_starts(self):
        fit = linkmix.lmer(M2_FORMULA, self.three, constraints=M2_CONSTRAINT, n_starts=10)
        return len(fit.equally_likely)
