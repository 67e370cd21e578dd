"""Results of a linked fit: the best optimum, every distinct optimum, the verdict.

Owns what a ``LinkedModel`` fit reports: estimates at the best optimum, Wald SEs on
the constraint manifold (from the reduced Hessian), the distinct optima the starts
reached and which are equally likely, the identifiability verdict, the summary and
JSON.  The result is read off the model when it is made, the second-order analysis
included (unless the fit skipped it, ``derivatives=False``): later changes to the
model do not change it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from . import sampling
from .errors import ArgumentError
from .inference import FixedEffectTests, Satterthwaite, check_ddf, quadratic_forms
from .optimize import ReducedHessian
from .results import Printable, Report, fixed_effects_table, format_table, params_table

__all__ = ["Optimum", "LinkedResults", "LinkedSummary"]

SAME_OPTIMUM = 1e-3       # two optima are the same when every natural parameter agrees to this
EQUAL_LIKELIHOOD = 1e-5   # optima whose -2 log L differ by less are equally likely
#: A contrast whose variance with the variance parameters held is below this fraction of
#: its variance is tied to them by the constraints: Satterthwaite's df do not apply.
TIED = 1e-6


@dataclass
class Optimum:
    """One distinct optimum a linked fit reached: −2 log L, log L, every named
    parameter on its natural scale, and how many starts reached it."""

    neg2ll: float
    loglik: float
    params: dict
    n_starts: int


class LinkedResults(FixedEffectTests, Report):
    """A maximum-likelihood fit of a ``LinkedModel``: the best optimum and all others.

    Attributes
    ----------
    objective : float
        −2 log L at the best optimum.
    theta, beta, sigma
        Estimates at the best optimum (β as a Series by design column).
    optima : list of Optimum
        Every distinct optimum reached (best first): ``loglik``, ``neg2ll``,
        ``params`` (name → value) and how many starts reached it.
    runs : list of ConstrainedRun
        One record per start.
    identification : Identification
        Rank of X with the constraints' β-gradients, and the free parameters.
    second_order : ReducedHessian or None
        The reduced Hessian at the best optimum (None with ``derivatives=False``).
    """

    def __init__(self, model, runs, feasible, method, derivatives: bool = True):
        self.model = model
        self.design = model.design
        self.space = space = model.space
        self.runs = runs
        self.method = method
        ordered = sorted(feasible, key=lambda r: r.fun_final)
        best = ordered[0]
        self._best = best
        self.z = z = best.x_final
        self.objective = float(model.deviance(z))
        # read while the model is at z: later calls do not depend on its state
        self._b_at_z = model.random_effects(z)
        self._residual_at_z = model.conditional_residual(z)
        theta, beta, sigma = space.user(z)
        self.theta, self.sigma, self._beta = theta.copy(), sigma, np.array(beta, dtype=float)
        self.natural = space.natural_from_z(z)

        #: ∂(natural parameters)/∂z at the optimum: z's coordinates follow the model's
        #: response (``set_response``), so it is read now
        self._natural_jacobian = space.natural_jacobian(z)
        self._kkt = getattr(best, "kkt", None) or model.kkt(z)
        self.kkt_residual = self._kkt.residual
        self.second_order: ReducedHessian | None = None
        self._satterthwaite: Satterthwaite | None = None
        if derivatives:
            with np.errstate(all="ignore"):
                self.second_order = best.second_order or model.reduced_hessian(z, self._kkt)
                if self.second_order.cov_z is not None:
                    self._satterthwaite = Satterthwaite.on_manifold(model, z,
                                                                    self.second_order)

        self.constraint_residuals = {}
        if model._eq:
            self.constraint_residuals.update(zip((c.label for c in model._eq), model.eq_values(z)))
        if model._ineq:
            self.constraint_residuals.update(
                zip((c.label for c in model._ineq), model.ineq_values(z)))
        self.fixed_rank = model.fixed_rank
        self.identification = model.identification(z)
        self.constraint_completes_rank = self.identification.completes_rank
        self.n_free = self.identification.n_free

        self.optima = []
        naturals = []
        for run in ordered:
            nat = space.natural_from_z(run.x_final)
            for opt, seen in zip(self.optima, naturals):
                if np.all(np.abs(nat - seen) <= SAME_OPTIMUM * (1 + np.abs(nat))):
                    opt.n_starts += 1
                    break
            else:
                self.optima.append(Optimum(run.fun_final, -0.5 * run.fun_final,
                                           space.as_dict(nat), 1))
                naturals.append(nat)
        self.equally_likely = [o for o in self.optima
                               if o.neg2ll - self.optima[0].neg2ll <= EQUAL_LIKELIHOOD]
        self.converged = bool(best.success and self.kkt_residual <= 2e-3
                              and not (self.second_order and self.second_order.negative))

    @cached_property
    def beta(self) -> pd.Series:
        """Fixed effects by design column (a batch row reads the array, not this)."""
        return pd.Series(self._beta, index=self.space.fixed_names, name="estimate")

    # ---- second-order analysis ---------------------------------------------------
    @property
    def reduced_hessian_eigenvalues(self) -> np.ndarray | None:
        """Eigenvalues of the Hessian of −log L restricted to the constraint manifold
        (None when the fit skipped its derivatives)."""
        return None if self.second_order is None else self.second_order.eigenvalues

    @property
    def reduced_hessian_singular(self) -> bool | None:
        """Whether that Hessian is singular (None when not computed)."""
        return None if self.second_order is None else self.second_order.singular

    @cached_property
    def se_natural(self) -> np.ndarray:
        """Wald SEs of the natural parameters: J (N'HN)⁻¹ J' by the delta method (NaN
        where the reduced Hessian is singular or was not computed)."""
        cov_z = None if self.second_order is None else self.second_order.cov_z
        if cov_z is None:
            return np.full(len(self.natural), np.nan)
        J = self._natural_jacobian
        return np.sqrt(np.clip(np.diag(J @ cov_z @ J.T), 0.0, None))


    # ---- tests of fixed effects (coef_table, contrast: FixedEffectTests) -------------
    @property
    def _fixed_names(self) -> list[str]:
        return self.space.fixed_names

    @property
    def _fixed_estimates(self) -> np.ndarray:
        return self._beta

    def _variance_df(self, L, method: str):
        """λ'cov(β̂)λ from the fit's covariance on the manifold (the SEs it reports), with
        Satterthwaite's df from ``Satterthwaite.on_manifold`` (NaN where the reduced
        Hessian is singular or was not computed, and where the constraints tie the
        contrast to the variance parameters: then its variance with them held,
        which the df describe, vanishes)."""
        if method == "kenward-roger":
            raise ArgumentError("Kenward-Roger's method needs a REML fit; a linked fit is "
                                "maximum likelihood: use ddf='satterthwaite' or 'wald'")
        cov_z = None if self.second_order is None else self.second_order.cov_z
        if cov_z is None:
            return np.full(len(L), np.nan), np.full(len(L), np.nan)
        fixef = np.array(self.space.kinds) == "fixef"
        variance = quadratic_forms(L @ self._natural_jacobian[fixef], cov_z)
        if method == "wald":
            return variance, np.full(len(L), np.inf)
        held, df = self._satterthwaite.test(L)
        return variance, np.where(held > TIED * variance, df, np.nan)

    # ---- verdicts -------------------------------------------------------------
    @property
    def identified(self) -> bool:
        """One best optimum among all starts, with a non-singular reduced Hessian (where
        it was computed)."""
        return len(self.equally_likely) == 1 and not self.reduced_hessian_singular

    @property
    def verdict(self) -> str:
        k, n_starts = len(self.equally_likely), len(self.runs)
        if k > 1:
            return (f"NOT IDENTIFIED: {k} distinct optima have equal likelihood "
                    f"(-2 log L within {EQUAL_LIKELIHOOD:g}); the constraints do not single "
                    f"out one solution")
        if self.reduced_hessian_singular:
            return ("NOT IDENTIFIED locally: the Hessian of -log L on the constraint manifold is "
                    "singular, so the estimates can move without changing the likelihood")
        if self.second_order is None:
            return ("identified among the starts' optima; local identification not checked "
                    "(fitted with derivatives=False)")
        others = len(self.optima) - 1
        if n_starts == 1:
            return "locally identified (one start; fit with n_starts > 1 to look for other optima)"
        if others:
            return (f"identified: a unique best optimum over {n_starts} starts "
                    f"({others} other local optima have lower likelihood)")
        return f"identified: all converged starts of {n_starts} reached the same optimum"

    @property
    def degenerate(self) -> bool:
        """The estimates are not uniquely determined (``identified`` is False)."""
        return not self.identified

    @property
    def warnings(self) -> list[str]:
        """Everything a user should know about this fit's reliability, one sentence each."""
        out = []
        if not self.converged:
            saddle = self.second_order is not None and self.second_order.negative
            out.append("did not converge: the point reached is a saddle of the likelihood on "
                       "the constraint manifold (its Hessian has a negative eigenvalue), not "
                       "a maximum" if saddle else
                       f"did not converge ({self._best.message}; KKT residual "
                       f"{self.kkt_residual:.2e})")
        if not self.identified:
            out.append(self.verdict)
        return out + self.boundary

    # ---- quantities -------------------------------------------------------------
    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.n_free

    @property
    def bic(self) -> float:
        return self.objective + math.log(self.nobs) * self.n_free

    @property
    def max_constraint_violation(self) -> float:
        return self._best.max_violation

    def sample(self, *, draws: int = 1000, chains: int = 4, prior: dict | None = None,
               seed: int | None = None, **options):
        """Posterior draws of every parameter, on the constraint manifold (equality
        constraints solved for their dependent parameters, inequalities truncating), as
        an ArviZ ``InferenceData``; see ``linkmix.sampling.sample``."""
        return sampling.sample(self, draws=draws, chains=chains, prior=prior, seed=seed,
                               **options)

    def _sampling_target(self) -> sampling.Target:
        """The full deviance D(θ, β, σ) over the natural parameters, the constraints,
        and walkers' starts at every equally likely optimum."""
        model, space = self.model, self.space
        if model.design is not self.design:
            raise ArgumentError("this fit's model has since been given another response")

        def neg2ll(theta, beta, sigma, _):
            return model.deviance(space.from_user(theta, beta, sigma))

        modes = [self.natural] + [np.array([o.params[name] for name in space.names])
                                  for o in self.equally_likely[1:]]
        nlmm = getattr(model.response, "nlmm", None)
        gradient = None
        if nlmm is None:
            design = self.design

            def fixed_mean(beta, natural):
                return design.X @ beta + model.mean_at_natural(natural)

            conditional = sampling.linear_conditional(design, fixed_mean)
            gradient = sampling.linear_deviance_gradient(
                design, fixed_mean, self._mean_jacobian if model.mean is not None else None)
            how = "exact marginal likelihood (random effects integrated out)"
        else:
            conditional = sampling.nonlinear_conditional(nlmm)
            how = "Laplace approximation"
        return sampling.Target(
            space, neg2ll, self.design.y, modes, self.se_natural, how,
            equalities=(lambda nat: model.constraint_values_at(nat, model._eq))
            if model._eq else None,
            inequalities=(lambda nat: model.constraint_values_at(nat, model._ineq))
            if model._ineq else None,
            conditional=conditional, deviance_gradient=gradient)

    def _mean_jacobian(self, natural) -> np.ndarray:
        """∂f/∂Π of the linked mean (n × parameters) by forward differences in the
        parameters it reads (zero columns for the rest)."""
        model, names = self.model, self.space.names
        used = model.mean.parameters_used
        columns = range(len(names)) if used is None else [names.index(n) for n in used]
        base = model.mean_at_natural(natural)
        J = np.zeros((len(base), len(names)))
        for j in columns:
            h = 1e-7 * max(1.0, abs(natural[j]))
            shifted = natural.copy()
            shifted[j] += h
            J[:, j] = (model.mean_at_natural(shifted) - base) / h
        return J

    def natural_estimates(self):
        """(names, kinds, estimates, standard errors) of every parameter, as arrays."""
        return self.space.names, self.space.kinds, self.natural, self.se_natural

    @cached_property
    def params(self) -> pd.DataFrame:
        """Every parameter indexed by name (as ``LMMResults.params``), with Wald SEs from
        the reduced Hessian (delta method)."""
        space = self.space
        with np.errstate(invalid="ignore", divide="ignore"):
            statistic = np.where(np.array(space.kinds) == "fixef",
                                 self.natural / self.se_natural, np.nan)
        return params_table(space, self.natural, self.se_natural, statistic)

    def _b(self) -> np.ndarray:
        return self._b_at_z

    def residuals(self) -> np.ndarray:
        """Conditional residuals y − Xβ − f(Π) − Zb̃."""
        return self._residual_at_z.copy()

    def fitted(self) -> np.ndarray:
        return self.design.y - self.residuals()

    # ---- reporting ----------------------------------------------------------------
    def summary(self, ddf: str | None = None) -> "LinkedSummary":
        """The fit, its optima and verdict, with t tests of the fixed effects by ``ddf``
        (see ``coef_table``)."""
        return LinkedSummary(self, ddf)

    def to_dict(self) -> dict:
        """A JSON-ready record of the fit."""
        params = self.params
        return {
            "formula": self.design.formula.text,
            "REML": False,
            "method": self.method,
            "constraints": [c.label for c in self.model.constraints],
            "mean": self.model.mean.label if self.model.mean is not None else None,
            "objective": self.objective,
            "neg2ll": self.objective,
            "loglik": self.loglik,
            "aic": self.aic,
            "bic": self.bic,
            "n_free": self.n_free,
            "nobs": self.nobs,
            "n_dropped": self.n_dropped,
            "theta": self.theta.tolist(),
            "fixef": {k: float(v) for k, v in self.beta.items()},
            "sigma": self.sigma,
            "params": {name: float(value) for name, value in params["estimate"].items()},
            "std_errors": {name: (None if np.isnan(value) else float(value))
                           for name, value in params["std_error"].items()},
            "fixef_tests": self.tests_record(),
            "constraint_residuals": {k: float(v) for k, v in self.constraint_residuals.items()},
            "kkt_residual": self.kkt_residual,
            "converged": self.converged,
            "identified": self.identified,
            "degenerate": self.degenerate,
            "warnings": self.warnings,
            "verdict": self.verdict,
            "reduced_hessian_eigenvalues": (None if self.second_order is None else
                                            list(map(float, self.second_order.eigenvalues))),
            "fixed_rank": self.fixed_rank,
            "n_fixed": self.space.p,
            "constraint_completes_rank": self.constraint_completes_rank,
            "optima": [dataclasses.asdict(o) for o in self.optima],
            "n_starts": len(self.runs),
            "runs": [r.as_dict() for r in self.runs],
        }



class LinkedSummary(Printable):
    """Printable summary of a linked fit."""

    def __init__(self, fit, ddf: str | None = None):
        super().__init__(fit)
        self.ddf = check_ddf(fit.default_ddf if ddf is None else ddf)

    def __str__(self) -> str:
        fit, model = self.fit, self.fit.model
        lines = [f"{model.title} [linkmix]",
                 f"Formula: {fit.design.formula.text}"]
        if model.mean is not None:
            lines.append(f"Linked mean: + {model.mean.label}")
        for label, value in fit.constraint_residuals.items():
            lines.append(f"Constraint: {label}    (residual {value:.2e})")
        if fit.n_dropped:
            lines.append(f"Rows dropped for missing values: {fit.n_dropped}")
        lines.append(f"Fixed-effects design: rank {fit.fixed_rank} of {fit.space.p} columns"
                     + ("" if fit.fixed_rank == fit.space.p else
                        f"; constraints {'complete' if fit.constraint_completes_rank else 'do NOT complete'} the rank"))
        lines.append("")
        lines.append("     AIC      BIC   logLik  -2logLik  free parameters")
        lines.append(f"{fit.aic:8.2f} {fit.bic:8.2f} {fit.loglik:8.3f} {fit.objective:9.4f}  "
                     f"{fit.n_free}")
        lines.append("")
        table = fit.params[["estimate", "std_error"]]
        table.columns = ["Estimate", "Std. Error"]
        table.index.name = None
        lines.append(format_table(table))
        lines.append("")
        lines += fixed_effects_table(fit, self.ddf, "on the constraint manifold")
        lines.append("")
        lines.append(f"Optima: {len(fit.optima)} distinct from {len(fit.runs)} start(s) "
                     f"({fit.method}); KKT residual {fit.kkt_residual:.2e}")
        if len(fit.optima) > 1:  # show the parameters in which the optima differ
            frame = pd.DataFrame([o.params for o in fit.optima[:10]])
            spread = (frame.max() - frame.min()) / (1 + frame.abs().max())
            frame = frame.loc[:, spread > SAME_OPTIMUM]
            frame.insert(0, "starts", [o.n_starts for o in fit.optima[:10]])
            frame.insert(0, "logLik", [o.loglik for o in fit.optima[:10]])
            frame.index = range(1, len(frame) + 1)
            lines.append(frame.to_string(float_format=lambda v: f"{v:.8g}"))
        else:
            lines.append(f"  1. logLik {fit.optima[0].loglik:.6f}  "
                         f"({fit.optima[0].n_starts} start(s))")
        lines.append(f"Uniqueness: {fit.verdict}")
        if not fit.converged:
            lines.append(f"WARNING: did not converge ({fit._best.message}; KKT residual "
                         f"{fit.kkt_residual:.2e})")
        return "\n".join(lines)
