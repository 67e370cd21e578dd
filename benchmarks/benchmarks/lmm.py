"""asv benchmarks of linear mixed-model fits, grouped by random-effects structure.

Each ``time_*`` holds only the timed call; ``setup`` loads the data and builds
the model.  InstEval is read from ``tests/data`` (or ``$LINKMIX_DATA``) and
skipped when absent.
"""

import os
import pathlib

import linkmix
import linkmix.datasets

STRUCTURES = {
    "scalar": ("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
    "vector": ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    "crossed": ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    "crossed-large": ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"),
}


def _load(stem):
    if stem in linkmix.datasets.names():
        return linkmix.datasets.load(stem)
    folder = pathlib.Path(os.environ.get(
        "LINKMIX_DATA", pathlib.Path(__file__).resolve().parents[2] / "tests" / "data"))
    path = next((p for p in (folder / f"{stem}.csv", folder / f"{stem}.csv.gz") if p.exists()),
                folder / f"{stem}.csv")
    if not path.exists():
        raise NotImplementedError(f"{path} not found")  # asv skips the benchmark
    return linkmix.read_table(path)


class FitML:
    params = (list(STRUCTURES), ["blocked", "cholmod"])
    param_names = ["structure", "engine"]
    timeout = 600

    def setup(self, structure, engine):
        if structure == "crossed-large" and engine == "cholmod":
            raise NotImplementedError("CHOLMOD on InstEval takes minutes; see compare_lme4.py")
        stem, self.formula = STRUCTURES[structure]
        self.data = _load(stem)
        self.engine = engine
        self.model = linkmix.LinearMixedModel(self.formula, self.data, REML=False, engine=engine)
        self.theta = self.model.design.theta_start()

    def time_fit(self, structure, engine):
        linkmix.lmer(self.formula, self.data, REML=False, engine=self.engine)

    def time_objective(self, structure, engine):
        self.model.objective(self.theta)

    def track_evaluations(self, structure, engine):
        return self.model.fit().optsummary.n_evaluations


class SmallFitWithTests:
    """A whole small fit as users time it against glmm (``lmer`` and ``coef_table``'s
    Satterthwaite t tests), by Newton's method on the dense kernel ("auto") and by
    BOBYQA (the path before it), on the same models."""

    params = (["scalar", "vector", "crossed", "peptide"], ["auto", "bobyqa"])
    param_names = ["structure", "optimizer"]

    def setup(self, structure, optimizer):
        if structure == "peptide":
            self.data = linkmix.datasets.simulate_msstats(
                1, n_conditions=2, n_bioreplicates=4, n_runs=2, n_features=(1, 1),
                missing_rate=0.0)
            self.formula = "log2Intensity ~ Condition + (1 | BioReplicate)"
        else:
            stem, self.formula = STRUCTURES[structure]
            self.data = _load(stem)
        self.optimizer = optimizer

    def time_fit_and_tests(self, structure, optimizer):
        linkmix.lmer(self.formula, self.data, REML=False,
                     optimizer=self.optimizer).coef_table()

    def track_evaluations(self, structure, optimizer):
        fit = linkmix.lmer(self.formula, self.data, REML=False, optimizer=self.optimizer)
        return fit.optsummary.n_evaluations
