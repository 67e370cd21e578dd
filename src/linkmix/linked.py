"""Linked linear mixed models: constraints between, and means depending on, all parameters.

Owns the full deviance as a function of ``z = (θ, β, log σ)`` with its gradient,
the constraints as functions of ``z``, the multi-start constrained fit, and the
analysis of its optima (distinct optima, KKT residuals, the reduced Hessian on
the constraint manifold).

The model is ``y = Xβ + f(Π) + ZΛ_θu + ε`` (``f`` the optional linked mean, Π the
named parameters of ``linkmix.parameters``) and its exact −2 log-likelihood is

    D(θ, β, σ) = n log(2πσ²) + r²(θ, β)/σ² + log|L_θ|²,
    r²(θ, β) = min_u ‖y − Xβ − f(Π) − ZΛu‖² + ‖u‖²,

computed by a factorisation engine without fixed-effects columns whose response
is ``y − Xβ − f(Π)``; a rank-deficient X is therefore harmless and is kept.  The
optimiser's z is in working coordinates (``linkmix.conditioning.LinkedCoordinates``:
θ_w of well-conditioned random-effects columns, β = Mγ with far-off columns centred),
so that covariates far from zero cost neither digits nor convergence; constraints
and means see the natural parameters.
By the envelope theorem ``∂D/∂β = −2X'r̃/σ²`` and ``∂D/∂log σ = 2n − 2r²/σ²``
(r̃ the conditional residual), plus the chain rule through ``f``; ``∂D/∂θ`` is
by central differences (second order, one-sided at a bound).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import scipy.linalg

from .constraints import Constraint, ConstraintError, MeanTerm, Params, make_constraint
from .design import build_design, drop_dependent_columns
from .deviance import full_deviance
from .engine import make_engine
from .errors import FitError
from . import numdiff
from . import arguments
from .conditioning import LinkedCoordinates
from .model import LinearMixedModel
from .nonlinear import NonlinearMixedModel
from .optimize import (CONSTRAINED_METHODS, KKT, ConstrainedRun, ReducedHessian,
                       minimize_bounded, minimize_constrained, newton_polish)
from .parameters import SIGMA, ParameterSpace, sd_name
from .results import LinkedResults

__all__ = ["LinkedModel", "LinkedNonlinearModel"]

#: A start is feasible when no constraint is violated by more than this.
FEASIBILITY_TOL = 1e-6
#: A start counts as an optimum when its KKT residual (deviance units) is below this.
RUN_KKT_TOL = 1e-2


def _as_list(constraints):
    """One constraint or several, as a list (``make_constraint`` judges each)."""
    if constraints is None:
        return []
    if isinstance(constraints, (list, tuple)):
        return list(constraints)
    return [constraints]


class _LinkedBase:
    """What every linked model shares: constraints as functions of ``z = (θ, β, log σ)``,
    starts, the multi-start constrained fit and the analysis of its optima.

    Subclasses set ``design`` (the user's numbers), ``working`` (the numbers z's
    coordinates refer to), ``formula`` and ``mean`` and provide ``deviance(z)``,
    ``gradient(z)``, ``base_start()``, ``random_effects(z)`` (b̃ in user units) and
    ``conditional_residual(z)``.
    """

    def _setup_links(self, constraints, coordinates=None):
        design = self.design
        self.space = space = ParameterSpace(design, coordinates)
        self.constraints = [make_constraint(c, space.names) for c in _as_list(constraints)]
        self.n = design.n
        self.fixed_rank = int(np.linalg.matrix_rank(design.X)) if design.p else 0
        self._eq = [c for c in self.constraints if c.kind == "eq"]
        self._ineq = [c for c in self.constraints if c.kind == "ineq"]
        self._searching = False

    # ---- parameters and user functions -------------------------------------
    def params_at(self, z) -> Params:
        return Params(self.space.names, self.space.index, self.space.natural_from_z(z),
                      "a constraint or mean")

    def _mean_at(self, z) -> np.ndarray:
        return self.mean(self.params_at(z)) if self.mean is not None else 0.0

    def _env(self, con, natural):
        """What ``con.fun`` receives: a plain name → value dict for a parsed constraint
        (cheap, and it reads only known names), a checking ``Params`` for a callable."""
        if con.parameters_used is not None:
            return dict(zip(self.space.names, natural))  # numpy floats: overflow gives inf
        return Params(self.space.names, self.space.index, natural, f"constraint {con.label!r}")

    def _call(self, con, env) -> float:
        """One constraint at ``env``; any failure becomes a ConstraintError.

        While an optimiser searches (``self._searching``), ±inf passes through (the
        optimiser is shown ±1e100 and backs off); NaN and exceptions always fail.
        """
        try:
            value = np.asarray(con.fun(env), dtype=float)
        except ConstraintError:
            raise
        except Exception as exc:
            raise ConstraintError(f"constraint {con.label!r} raised {type(exc).__name__}: "
                                  f"{exc}") from None
        if value.size != 1 or np.isnan(value).any() or (
                not self._searching and not np.isfinite(value).all()):
            at = {name: float(env[name]) for name in self.space.names}
            raise ConstraintError(f"constraint {con.label!r} returned {value.tolist()!r} (a "
                                  f"finite number is needed) at {at}")
        return float(value)

    def _constraint_values(self, group, z) -> np.ndarray:
        natural = self.space.natural_from_z(z)
        return np.array([self._call(con, self._env(con, natural)) for con in group])

    def eq_values(self, z) -> np.ndarray:
        """Residuals of the equality constraints (0 when satisfied)."""
        return self._constraint_values(self._eq, z)

    def ineq_values(self, z) -> np.ndarray:
        """Values of the inequality constraints (≥ 0 when satisfied)."""
        return self._constraint_values(self._ineq, z)

    def _jacobian(self, group, z, step=1e-7) -> np.ndarray:
        """∂c/∂z = ∂c/∂Π · ∂Π/∂z: central differences in the named parameters each
        constraint reads (all of them for a callable), then the chain rule."""
        space = self.space
        natural = space.natural_from_z(z)
        grad_nat = np.zeros((len(group), len(natural)))
        for i, con in enumerate(group):
            if con.parameters_used is not None:  # perturb one entry of one dict in place
                env = self._env(con, natural)
                for name in con.parameters_used:
                    centre = env[name]
                    h = numdiff.step(centre, step)
                    env[name] = centre + h
                    up = self._call(con, env)
                    env[name] = centre - h
                    down = self._call(con, env)
                    env[name] = centre
                    grad_nat[i, space.index[name]] = (up - down) / (2 * h)
            else:
                grad_nat[i] = numdiff.jacobian(
                    lambda nat: self._call(con, self._env(con, nat)), natural, rel_step=step)[0]
        return grad_nat @ space.natural_jacobian(z)

    def eq_jacobian(self, z) -> np.ndarray:
        return self._jacobian(self._eq, z)

    def ineq_jacobian(self, z) -> np.ndarray:
        return self._jacobian(self._ineq, z)

    # ---- starts ---------------------------------------------------------------
    def starts(self, n_starts: int, seed: int = 0, start=None) -> list[np.ndarray]:
        """``n_starts`` deterministic starting points: the base start, then spread ones.

        The spread ones scale θ by e^{±1} and σ by e^{±0.5}, move each β by up to
        ±3·max(1, |β|), and move along each unidentified direction of X (its null
        space) by up to ±3·max(1, max|β|), on a scrambled Halton sequence (seeded)
        so they cover the space evenly: the wide moves are what find optima that
        differ only where the data say nothing.
        """
        base = self.base_start() if start is None else self._start_from(start)
        if n_starts <= 1:
            return [base]
        nt, p = self.space.n_theta, self.space.p
        theta0, beta0, sigma0 = self.space.user(base)
        diag = np.isfinite(self.space.theta_lower)
        null = scipy.linalg.null_space(self.design.X) if p else np.zeros((0, 0))
        null = null / np.max(np.abs(null), axis=0) if null.size else null
        dim = nt + p + 1 + null.shape[1]
        from scipy.stats import qmc  # here: scipy.stats takes a second to import

        points = 2.0 * qmc.Halton(d=dim, scramble=True, seed=seed).random(n_starts - 1) - 1
        reach = 3.0 * max(1.0, float(np.max(np.abs(beta0), initial=0.0)))
        out = [base]
        for point in points:
            theta = np.where(diag, theta0 * np.exp(point[:nt]), theta0 + 0.5 * point[:nt])
            beta = beta0 + 3.0 * np.maximum(1.0, np.abs(beta0)) * point[nt:nt + p]
            if null.size:
                beta = beta + reach * (null @ point[nt + p + 1:])
            sigma = sigma0 * math.exp(0.5 * point[nt + p])
            out.append(self.space.from_user(theta, beta, sigma))
        return out

    def scales(self, z) -> np.ndarray:
        """Typical step of each coordinate of z, 1/sqrt of a diagonal curvature estimate.

        SLSQP's first step and line search assume unit curvature; without scaling a
        start far from the optimum sends it to absurd points.  log σ: 1/sqrt(4n)
        (∂²D/∂(log σ)² = 4n at the optimum); β: ``_beta_scales`` (linear models:
        σ/sqrt(2·(X'X)_jj)) or, where that is None, like θ from a second difference of D.
        """
        nt, p = self.space.n_theta, self.space.p
        out = np.empty(len(z))
        out[-1] = 1.0 / math.sqrt(4.0 * self.n)
        beta_scales = self._beta_scales(z)
        second_difference = range(nt) if beta_scales is not None else range(nt + p)
        if beta_scales is not None:
            out[nt:nt + p] = beta_scales
        curvature = numdiff.curvatures(self.deviance, z, lower=self.space.z_lower(),
                                       rel_step=1e-3, indices=second_difference)
        for k, c in zip(second_difference, curvature.tolist()):
            out[k] = 1.0 / math.sqrt(c) if c > 1e-8 else 1.0
        return np.clip(out, 1e-8, 1e4)

    def _beta_scales(self, z):
        return None

    #: Move each start onto the equality constraints along X's null space first.
    project_starts = True
    #: A projected start with a KKT residual below this is taken as the optimum.
    START_KKT_TOL = 1e-4

    def _optimal_already(self, z_start, z):
        """A finished run when ``z`` (a projected start) already satisfies the constraints
        and the KKT conditions, as when the constraints only identify; else None."""
        violation = float(np.max(np.abs(self.eq_values(z)), initial=0.0))
        if self._ineq:
            violation = max(violation, float(np.max(-self.ineq_values(z), initial=0.0)))
        if not violation <= 1e-10:
            return None
        kkt = self.kkt(z)
        if kkt.residual > self.START_KKT_TOL:
            return None
        self._searching = False
        return ConstrainedRun(x_initial=np.asarray(z_start), x_final=np.asarray(z),
                              fun_final=float(self.deviance(z)), success=True,
                              message="the start, moved onto the constraints along X's null "
                                      "space, satisfies the KKT conditions",
                              max_violation=violation, kkt_residual=kkt.residual,
                              kkt=kkt)

    def _onto_constraints_along_null_space(self, z0, max_iter: int = 20) -> np.ndarray:
        """Move a start along the unidentified directions of X (which leave Xβ, hence
        the likelihood, unchanged) until the equality constraints hold, by Newton's
        method on those directions' coordinates.

        When the constraints only identify (as the seed link does) the result is
        already a constrained optimum and the optimiser just confirms it; otherwise
        (no null space, other constraint counts, no convergence) ``z0`` is returned.
        """
        if not self._eq or self.mean is not None or self.space.p == 0:
            return z0
        null = getattr(self, "_null", None)
        if null is None:  # in z's coordinates: the null space of the working X
            null = self._null = scipy.linalg.null_space(self.working.X)
        if null.shape[1] != len(self._eq):
            return z0
        nt, p = self.space.n_theta, self.space.p
        embed = np.zeros((len(z0), null.shape[1]))
        embed[nt:nt + p] = null
        z, c = z0.copy(), self.eq_values(z0)
        for _ in range(max_iter):
            if np.max(np.abs(c)) < 1e-12:
                return z
            try:
                step = np.linalg.solve(self.eq_jacobian(z) @ embed, -c)
            except np.linalg.LinAlgError:
                return z0
            for _ in range(30):  # halve until the residual shrinks (the link can be steep)
                z_new = z + embed @ step
                c_new = self.eq_values(z_new)
                if np.all(np.isfinite(c_new)) and np.max(np.abs(c_new)) < np.max(np.abs(c)):
                    break
                step /= 2
            else:
                return z0
            z, c = z_new, c_new
        return z0

    def _start_from(self, start) -> np.ndarray:
        """z from an array (lme4's θ, β, log σ) or a mapping of parameter names.

        A mapping may give fixed effects, ``sigma`` and the SDs of scalar terms;
        the rest comes from the base start.
        """
        if not isinstance(start, Mapping):
            z = np.asarray(start, dtype=float)
            if z.shape != (self.space.dim_z,):
                raise ConstraintError(f"start must have {self.space.dim_z} entries "
                                      f"(θ, β, log σ) or be a mapping of parameter names")
            return self.space.from_user(*self.space.split(z))
        theta, beta, sigma = self.space.user(self.base_start())
        theta, beta = theta.copy(), beta.copy()
        sigma = float(start.get(SIGMA, sigma))
        offsets = np.cumsum([0] + [len(t.theta_positions()) for t in self.design.terms])
        scalar_sd = {sd_name(t.coef_names[0], t.group): offsets[i]
                     for i, t in enumerate(self.design.terms) if t.k == 1}
        fixed = {name: i for i, name in enumerate(self.space.fixed_names)}
        for name, value in start.items():
            if name in fixed:
                beta[fixed[name]] = value
            elif name in scalar_sd:
                theta[scalar_sd[name]] = float(value) / sigma
            elif name != SIGMA:
                raise ConstraintError(f"cannot start from {name!r}: start values may name fixed "
                                      f"effects, sigma and SDs of scalar terms "
                                      f"{sorted(scalar_sd)}")
        return self.space.from_user(theta, beta, sigma)

    # ---- fitting ------------------------------------------------------------------
    def fit(self, *, n_starts: int = 1, method: str = "SLSQP", seed: int = 0, start=None):
        """Maximise the likelihood under the constraints from ``n_starts`` starts.

        Returns
        -------
        LinkedResults
            The best optimum, every distinct optimum, and the identifiability verdict.
        """
        arguments.choice(method, "method", CONSTRAINED_METHODS)
        n_starts = arguments.count(n_starts, "n_starts")
        seed = arguments.count(seed, "seed", minimum=0)
        with np.errstate(all="ignore"):  # trial points may overflow; results are checked
            return self._fit(n_starts, method, seed, start)

    def _fit(self, n_starts, method, seed, start):

        starts = self.starts(n_starts, seed, start)
        # Bad constraints and means fail here, once, with their own message.
        self.eq_values(starts[0]), self.ineq_values(starts[0]), self._mean_at(starts[0])
        # Spread starts are far from the optimum, where SLSQP's unit initial Hessian sends
        # its first steps to absurd points: they run on w = z / s (unit-scaled).  The base
        # start is the unconstrained optimum, close by, and converges faster unscaled.
        spread_scale = self.scales(starts[0]) if len(starts) > 1 else None
        eq, ineq = bool(self._eq), bool(self._ineq)
        runs = []
        for i, z0 in enumerate(starts):
            s = np.ones(len(z0)) if i == 0 else spread_scale
            try:
                self._searching = True
                z_start = z0
                if self.project_starts:
                    z0 = self._onto_constraints_along_null_space(z0)
                    run = self._optimal_already(z_start, z0) if z0 is not z_start else None
                    if run is not None:
                        runs.append(run)
                        continue
                run = minimize_constrained(
                    lambda w: self.deviance(w * s), lambda w: self.gradient(w * s) * s,
                    z0 / s, self.space.z_lower() / s,
                    eq=(lambda w: self.eq_values(w * s)) if eq else None,
                    eq_jac=(lambda w: self.eq_jacobian(w * s) * s) if eq else None,
                    ineq=(lambda w: self.ineq_values(w * s)) if ineq else None,
                    ineq_jac=(lambda w: self.ineq_jacobian(w * s) * s) if ineq else None,
                    method=method, upper=self.space.z_upper() / s)
                self._searching = False
                run.x_initial, run.x_final = z_start, run.x_final * s
                if run.max_violation <= FEASIBILITY_TOL:
                    run.kkt = self.kkt(run.x_final)
                    run.kkt_residual = run.kkt.residual
            except ConstraintError as exc:
                run = ConstrainedRun(x_initial=np.asarray(z0), message=f"failed: {exc}")
            finally:
                self._searching = False
            runs.append(run)
        feasible = [r for r in runs if r.x_final is not None and math.isfinite(r.fun_final)
                    and r.max_violation <= FEASIBILITY_TOL and r.kkt_residual <= RUN_KKT_TOL]
        if not feasible:
            tried = [r for r in runs if r.x_final is not None]
            if not tried:
                raise ConstraintError(runs[0].message.removeprefix("failed: "))
            closest = min(tried, key=lambda r: r.max_violation)
            raise FitError(
                f"the constraints could not be satisfied from {len(runs)} start(s): the "
                f"smallest violation reached is {closest.max_violation:.3g} "
                f"({closest.message}); they may be infeasible")
        return LinkedResults(self, runs, feasible, method)

    # ---- analysis at an optimum ---------------------------------------------------
    def active_jacobian(self, z, grad) -> np.ndarray:
        """Rows: equality constraints, active inequalities, and θ held at its bound."""
        rows = []
        if self._eq:
            rows.append(self.eq_jacobian(z))
        if self._ineq:
            active = np.abs(self.ineq_values(z)) <= FEASIBILITY_TOL
            if active.any():
                rows.append(self.ineq_jacobian(z)[active])
        lower = self.space.z_lower()
        at_bound = np.isfinite(lower) & (z - lower <= 1e-8) & (grad > 0)
        for k in np.flatnonzero(at_bound):
            e = np.zeros(len(z))
            e[k] = 1.0
            rows.append(e[None, :])
        return np.vstack(rows) if rows else np.zeros((0, len(z)))

    def lagrangian_hessian(self, z, multipliers, step: float = 1e-4, grad=None) -> np.ndarray:
        """∇²(D − λ'c) at ``z`` by finite differences of the gradients (``grad``, ∇D at
        ``z``, is not needed here)."""
        z = np.asarray(z, dtype=float)

        def lagrangian_grad(x):
            g = self.gradient(x)
            if len(multipliers) and self.constraints:
                J = self._constraint_rows(x)
                g = g - J.T @ multipliers[: J.shape[0]]
            return g

        H = numdiff.jacobian(lagrangian_grad, z, lower=self.space.z_lower(), rel_step=step)
        return 0.5 * (H + H.T)

    def _constraint_rows(self, z) -> np.ndarray:
        rows = []
        if self._eq:
            rows.append(self.eq_jacobian(z))
        if self._ineq:
            rows.append(self.ineq_jacobian(z))
        return np.vstack(rows) if rows else np.zeros((0, len(z)))

    def kkt(self, z) -> KKT:
        """Gradient, active constraint Jacobian, least-squares multipliers λ and the KKT
        residual ``max |∇D − J'λ|`` at ``z``."""
        z = np.asarray(z, dtype=float)
        grad = self.gradient(z)
        J = self.active_jacobian(z, grad)
        if J.shape[0]:
            lam, *_ = np.linalg.lstsq(J.T, grad, rcond=None)
            residual = grad - J.T @ lam
        else:
            lam, residual = np.zeros(0), grad
        return KKT(grad, J, lam, float(np.max(np.abs(residual), initial=0.0)))

    def reduced_hessian(self, z, kkt: KKT) -> ReducedHessian:
        """Hessian of −log L on the constraint manifold at an optimum, and the covariance
        of z it implies (``None`` when the reduced Hessian is singular)."""
        z = np.asarray(z, dtype=float)
        lam, J = kkt.multipliers, kkt.active_jacobian
        # multipliers of the user's constraints (eq first, then all ineq), for the Hessian
        con_lam = np.zeros(len(self._eq) + len(self._ineq))
        con_lam[: len(self._eq)] = lam[: len(self._eq)]
        if self._ineq:
            active = np.abs(self.ineq_values(z)) <= FEASIBILITY_TOL
            con_lam[len(self._eq):][active] = lam[len(self._eq):len(self._eq) + active.sum()]
        H = self.lagrangian_hessian(z, con_lam, grad=kkt.gradient)
        N = scipy.linalg.null_space(J) if J.shape[0] else np.eye(len(z))
        reduced = 0.5 * N.T @ H @ N                 # Hessian of −log L on the manifold
        if not reduced.size:
            return ReducedHessian(np.zeros(0), False, np.zeros((len(z), len(z))))
        eig = np.linalg.eigvalsh(reduced)
        singular = bool(eig.min() <= 1e-8 * max(1.0, float(np.max(np.abs(eig)))))
        cov_z = None if singular else N @ np.linalg.solve(reduced, N.T)
        return ReducedHessian(eig, singular, cov_z)

    def identification(self, z) -> tuple[bool, int]:
        """Whether X with the equality constraints' β-gradients has full column rank,
        and the number of free parameters: dim z − rank(∂c/∂z) − the directions of β
        that neither X nor the constraints pin down."""
        p, nt = self.space.p, self.space.n_theta
        J = self.eq_jacobian(z) if self._eq else np.zeros((0, len(z)))
        eq_rank = int(np.linalg.matrix_rank(J)) if len(J) else 0
        rank = int(np.linalg.matrix_rank(np.vstack([self.working.X, J[:, nt:nt + p]]))) if p else 0
        return rank == p, self.space.dim_z - eq_rank - (p - rank)


class LinkedModel(_LinkedBase):
    """A linear mixed model with constraints on, and/or a mean depending on, its parameters.

    Parameters
    ----------
    formula : str
        lme4-style formula; a rank-deficient fixed part is kept.
    data : pandas.DataFrame
    constraints : str, callable, dict, Constraint, or a list of them
        Equalities ``"lhs == rhs"`` / inequalities ``"lhs >= rhs"`` over the
        parameter names, or callables of a name → value mapping returning the
        residual (``== 0``, or ``>= 0`` with ``{"type": "ineq", "fun": f}``).
    mean : str or callable, optional
        A term ``f(Π, data)`` added to Xβ: an expression over parameter names and
        data columns, or ``callable(params, data)`` returning n values.
    engine : {"auto", "blocked", "cholmod"}
    missing : {"drop", "raise"}
    """

    title = "Linked linear mixed model fit by maximum likelihood"

    def __init__(self, formula: str, data, *, constraints=None, mean=None,
                 engine: str = "auto", missing: str = "drop"):
        self._setup(build_design(formula, data, missing=missing, drop_rank_deficient=False),
                    data, constraints, mean, engine)

    @classmethod
    def from_design(cls, design, data, *, constraints=None, mean=None, engine: str = "auto"):
        """A linked model over an already built ``LMMDesign`` (its fixed-effects columns
        all kept) of the rows ``design.row_index`` of ``data`` (no formula parsing)."""
        model = cls.__new__(cls)
        model._setup(design, data, constraints, mean, engine)
        return model

    def _setup(self, design, data, constraints, mean, engine):
        self.formula = design.formula.text
        self.data = data
        self.design = design
        self.coordinates = coordinates = LinkedCoordinates(design)
        self.working = coordinates.working
        self._setup_links(constraints, coordinates)
        self.rows = data.loc[design.row_index]
        self.mean = MeanTerm(mean, self.space.names, self.rows) if mean is not None else None
        random_only = dataclasses.replace(self.working, X=np.zeros((design.n, 0)),
                                          fixed_names=[])
        self.engine = make_engine(random_only, engine)
        self.Z = self.working.Z_sparse()
        self._state_z = None
        self._engine_response = None

    # ---- the full deviance and its gradient ----------------------------------
    def deviance(self, z) -> float:
        """D(θ, β, σ) = −2 log L at ``z = (θ, β, log σ)``."""
        z = np.asarray(z, dtype=float)
        theta, beta, sigma = self.space.split(z)
        response = self.design.y - self.working.X @ beta - self._mean_at(z)
        if not np.all(np.isfinite(response)):
            self._state_z = None
            return math.inf
        if self._engine_response is None or not np.array_equal(response, self._engine_response):
            self.engine.set_response(response)
            self._engine_response = response
        if not self.engine.update(theta):
            self._state_z = None
            return math.inf
        r2 = self.engine.prss()
        self._state_z, self._state_response, self._state_r2 = z.copy(), response, r2
        return full_deviance(self.engine.logdet_L, r2, self.n, sigma)

    def _ensure_state(self, z):
        if self._state_z is None or not np.array_equal(self._state_z, z):
            self.deviance(z)

    def conditional_residual(self, z) -> np.ndarray:
        """r̃ = y − Xβ − f(Π) − ZΛũ at ``z``."""
        z = np.asarray(z, dtype=float)
        self._ensure_state(z)
        theta = self.space.split(z)[0]
        u = self.engine.conditional_modes(np.zeros(0))
        return self._state_response - self.Z @ self.working.Lambda_times(theta, u)

    def gradient(self, z, step: float = 1e-5) -> np.ndarray:
        """∇D at ``z``: exact in β and log σ, central differences in θ."""
        z = np.asarray(z, dtype=float)
        self._ensure_state(z)
        nt, p = self.space.n_theta, self.space.p
        sigma = self.space.split(z)[2]
        r2 = self._state_r2
        w = -2.0 * self.conditional_residual(z) / sigma**2      # ∂D/∂(mean_i)
        grad = np.empty(len(z))
        grad[nt:nt + p] = self.working.X.T @ w
        grad[-1] = 2.0 * self.n - 2.0 * r2 / sigma**2
        if self.mean is not None:  # the chain rule through f(Π): w'∂f/∂z
            grad[nt:] += w @ numdiff.jacobian(self._mean_at, z, indices=range(nt, len(z)))
        grad[:nt] = numdiff.jacobian(self.deviance, z, lower=self.space.z_lower(),
                                     rel_step=step, indices=range(nt))[0]
        return grad

    def lagrangian_hessian(self, z, multipliers, step: float = 1e-4, grad=None) -> np.ndarray:
        """∇²(D − λ'c) at ``z`` (``grad``: ∇D at ``z`` where the caller has it, as from
        ``kkt``); without a linked mean the (β, log σ) block is exact:

        ∂²D/∂β∂β' = 2X'V₀⁻¹X/σ² (V₀ = I + ZΛΛ'Z', from one engine solve with B = Λ'Z'X),
        ∂²D/∂β∂log σ = −2·∂D/∂β, ∂²D/∂(log σ)² = 4r²/σ²; the θ columns by central
        differences of the gradient, and λ'∇²c by differences of the constraint
        Jacobian only where λ ≠ 0.
        """
        if self.mean is not None:
            return super().lagrangian_hessian(z, multipliers, step)
        z = np.asarray(z, dtype=float)
        nt, p = self.space.n_theta, self.space.p
        theta, _, sigma = self.space.split(z)
        lower = self.space.z_lower()
        if grad is None:
            grad = self.gradient(z)
        else:
            self._ensure_state(z)
        r2 = self._state_r2
        H = np.empty((len(z), len(z)))
        H[:, :nt] = numdiff.jacobian(self.gradient, z, lower=lower, rel_step=step,
                                     indices=range(nt))
        H[:nt, nt:] = H[nt:, :nt].T
        self._ensure_state(z)  # the factor at z's θ, for X'V₀⁻¹X
        H[nt:nt + p, nt:nt + p] = 2.0 * self._xt_vinv_x(theta) / sigma**2
        H[nt:nt + p, -1] = H[-1, nt:nt + p] = -2.0 * grad[nt:nt + p]
        H[-1, -1] = 4.0 * r2 / sigma**2
        # λ is ∇D in constraint coordinates: where ∇D itself vanishes (constraints that
        # only identify) the curvature term is rounding noise and is skipped
        if len(multipliers) and self.constraints and np.max(np.abs(grad)) > 1e-4:
            H -= self._constraint_curvature(z, multipliers, step)
        return 0.5 * (H + H.T)

    def _constraint_curvature(self, z, multipliers, step) -> np.ndarray:
        """Σ λ_i ∇²c_i in z.  For parsed constraints of scalar-term models, by the chain
        rule through the natural parameters: J'(∇²_Π c)J + Σ_j ∂c/∂Π_j ∇²Π_j, with ∇²_Π c
        by second differences over the few parameters c reads and ∇²Π_j exact (Π_j is
        β_j, σ|θ_k| or σ); otherwise by differences of the constraint Jacobian."""
        constraints = self._eq + self._ineq
        lam = multipliers[:len(constraints)]
        if not self.space.scalar_terms or any(c.parameters_used is None for c in constraints):
            def weighted(x):
                J = self._constraint_rows(x)
                return J.T @ lam[: J.shape[0]]
            return numdiff.jacobian(weighted, z, lower=self.space.z_lower(), rel_step=step)
        space = self.space
        natural = space.natural_from_z(z)
        J = space.natural_jacobian(z)
        nt, p = space.n_theta, space.p
        theta, _, sigma = space.split(z)
        factor = space.sd_factor
        out = np.zeros((len(z), len(z)))
        for weight, con in zip(lam, constraints):
            if weight == 0:
                continue
            env = self._env(con, natural)
            used = list(con.parameters_used)
            idx = [space.index[name] for name in used]

            def of_used(values):  # c as a function of the parameters it reads
                env.update(zip(used, values))
                return self._call(con, env)

            g_used, h_used, _, _ = numdiff.hessian(of_used, natural[idx], rel_step=1e-4)
            env.update(zip(used, natural[idx]))
            grad = np.zeros(len(natural))
            hess = np.zeros((len(natural), len(natural)))
            grad[idx] = g_used
            hess[np.ix_(idx, idx)] = h_used
            curvature = J.T @ hess @ J
            # ∇²Π: sd_k = σ·b_k|z_k| and σ = e^{log σ} are the only non-linear entries
            # (β = Mγ is linear)
            for k in range(nt):
                g = grad[p + k] * factor[k]
                sign = -1.0 if theta[k] < 0 else 1.0
                curvature[k, -1] += g * sigma * sign
                curvature[-1, k] += g * sigma * sign
                curvature[-1, -1] += g * sigma * abs(theta[k])
            curvature[-1, -1] += grad[-1] * sigma
            out += weight * curvature
        return out

    def _xt_vinv_x(self, theta) -> np.ndarray:
        """X'V₀⁻¹X = X'X − B'(Λ'Z'ZΛ + I)⁻¹B with B = Λ'Z'X, from the engine's factor at
        θ (which the caller has made current; its response is left as it is)."""
        X = self.working.X
        B = self.working.Lambda_times(theta, self.Z.T @ X, transpose=True)
        out = X.T @ X - B.T @ self.engine.solve(B)
        return 0.5 * (out + out.T)

    def base_start(self) -> np.ndarray:
        """z at the unconstrained ML fit (rank-deficient columns at 0), ignoring any mean."""
        if getattr(self, "_base", None) is None:  # built once; batch fits swap y only
            X, names, _ = drop_dependent_columns(self.design.X, self.space.fixed_names)
            index = {name: i for i, name in enumerate(self.space.fixed_names)}
            self._base = (LinearMixedModel.from_design(
                dataclasses.replace(self.design, X=X, fixed_names=names), REML=False),
                [index[name] for name in names])
        model, kept = self._base
        model.set_response(self.design.y)
        lower = model.design.theta_lower
        opt = minimize_bounded(model.deviance, model.design.theta_start(), lower,
                               check_gradient=False)
        # the start's gradient is what decides whether a projected start is already the
        # constrained optimum (START_KKT_TOL): polish BOBYQA's answer first
        theta_w, _ = newton_polish(model.deviance, opt.x_final, lower, f0=opt.fun_final)
        estimates = model.estimates(theta_w)
        beta = np.zeros(self.space.p)
        beta[kept] = estimates.beta
        theta = estimates.theta.copy()
        diag = np.isfinite(self.space.theta_lower)
        theta[diag & (theta < 1e-3)] = 0.1  # start off the boundary
        return self.space.from_user(theta, beta, estimates.sigma)

    def set_response(self, y, row_index=None) -> None:
        """Refit-ready for another response of the same layout (batch fits)."""
        self.design = dataclasses.replace(self.design, y=np.asarray(y, dtype=float),
                                          row_index=row_index)
        self.working = dataclasses.replace(self.working, y=self.design.y,
                                           row_index=row_index)
        self.space.rebind(self.design)
        self._state_z = self._engine_response = None

    def random_effects(self, z) -> np.ndarray:
        """b̃ at ``z`` (user units, flat in θ's term order)."""
        z = np.asarray(z, dtype=float)
        self._ensure_state(z)
        u = self.engine.conditional_modes(np.zeros(0))
        b_w = self.working.Lambda_times(self.space.split(z)[0], u)
        return self.coordinates.effects(b_w)

    def _beta_scales(self, z) -> np.ndarray:
        sigma = self.space.split(z)[2]
        return sigma / np.sqrt(np.maximum(2.0 * np.sum(self.working.X**2, axis=0), 1e-12))


class LinkedNonlinearModel(_LinkedBase):
    """A nonlinear mixed model with constraints between its named parameters.

    The likelihood is the Laplace approximation with nothing profiled,
    ``D = n log(2πσ²) + r²(θ, β)/σ² + log|L|²`` (r² and L from PNLS at (θ, β));
    ``∂D/∂log σ = 2n − 2r²/σ²`` exactly, θ and β by central differences (each
    perturbed PNLS starts from the same ũ, so the differences are smooth).
    Parameters as ``linkmix.nlmer``.
    """

    title = "Linked nonlinear mixed model fit by maximum likelihood (Laplace approximation)"

    def __init__(self, formula: str, data, random=None, *, fixed=None, model=None,
                 engine: str = "auto", missing: str = "drop", constraints=None):
        self.formula = formula
        self.nlmm = NonlinearMixedModel(formula, data, random, fixed=fixed, model=model,
                                        engine=engine, missing=missing)
        self.design = self.working = self.nlmm.design
        self.mean = None
        self._setup_links(constraints)
        self._state = None

    def _deviance_from(self, z, u_start) -> float:
        theta, beta, sigma = self.space.split(np.asarray(z, dtype=float))
        r2, u, logdet, _ = self.nlmm.pnls(theta, beta, u_start)
        if not math.isfinite(r2) or not math.isfinite(logdet):
            return math.inf
        self._state = (np.array(z, dtype=float), r2, u)
        return full_deviance(logdet, r2, self.n, sigma)

    def deviance(self, z) -> float:
        """Laplace −2 log L at ``z = (θ, β, log σ)``."""
        return self._deviance_from(z, None)

    def _at(self, z):
        z = np.asarray(z, dtype=float)
        if self._state is None or not np.array_equal(self._state[0], z):
            self.deviance(z)
        return self._state

    def gradient(self, z, step: float = 1e-6) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        state = self._at(z)
        _, r2, u = state
        nt, p = self.space.n_theta, self.space.p
        grad = np.empty(len(z))
        grad[:nt + p] = numdiff.jacobian(lambda x: self._deviance_from(x, u), z,
                                         lower=self.space.z_lower(), rel_step=step,
                                         indices=range(nt + p))[0]
        sigma = self.space.split(z)[2]
        grad[-1] = 2.0 * self.n - 2.0 * r2 / sigma**2
        self._state = state  # the differences moved it; z's own r² and ũ are known
        return grad

    def base_start(self) -> np.ndarray:
        """z at the unconstrained Laplace fit."""
        fit = self.nlmm.fit(check_gradient=False)
        theta = fit.theta.copy()
        diag = np.isfinite(self.space.theta_lower)
        theta[diag & (theta < 1e-3)] = 0.1  # start off the boundary
        return self.space.join(theta, fit.beta.to_numpy(), fit.sigma)

    def modes(self, z) -> np.ndarray:
        return self._at(z)[2]

    def random_effects(self, z) -> np.ndarray:
        """b̃ = Λũ at ``z`` (flat in θ's term order)."""
        return self.design.Lambda_times(self.space.split(z)[0], self.modes(z))

    def conditional_residual(self, z) -> np.ndarray:
        theta, beta, _ = self.space.split(np.asarray(z, dtype=float))
        mu, _, _ = self.nlmm._mean(theta, beta, self.modes(z), with_gradient=False)
        return self.design.y - mu
