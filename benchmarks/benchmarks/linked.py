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


class SeedBatch:
    """200 seed peptides (5% missing) per peptide, one core, as ``benchmarks/batch_lme4.py``
    (which times lme4's loop in the same run): unconstrained, and M2 with its SEs."""

    timeout = 600

    def setup(self):
        warnings.simplefilter("ignore")
        self.data, _ = datasets.simulate_experiment(200, seed=11)

    def time_unconstrained(self):
        linkmix.fit_groups(self.data, "peptide", M2_FORMULA, REML=False, n_jobs=1)

    def time_constrained_m2_with_ses(self):
        linkmix.fit_groups(self.data, "peptide", M2_FORMULA, constraints=[M2_CONSTRAINT],
                           n_jobs=1)
