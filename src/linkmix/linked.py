"""Linked mixed models: constraints between, and means depending on, all parameters.

Owns the constraints as functions of ``z = (θ, β, log σ)`` and their derivatives,
the starts, the multi-start constrained fit, and the analysis of its optima
(distinct optima, KKT residuals, the reduced Hessian on the constraint manifold,
identification).

The model is ``y = Xβ + f(Π) + ZΛ_θu + ε`` (``f`` the optional linked mean, Π the
named parameters of ``linkmix.parameters``), or a nonlinear mixed model, and its
−2 log-likelihood, exact or by the Laplace approximation, is

    D(θ, β, σ) = n log(2πσ²) + r²(θ, β)/σ² + log|L_θ|²,

with r² and L from the model's response side (``linkmix.responses``): a linear
response y − Xβ − f(Π) over an engine without fixed-effects columns, or PNLS.
Constraints and means see the natural parameters; the optimiser's z may be in
working coordinates (``linkmix.conditioning.LinkedCoordinates``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import scipy.linalg

from . import arguments, numdiff
from .constraints import ConstraintError, Expression, MeanTerm, Params, make_constraint
from .design import build_design
from .errors import FitError
from .model import LinearMixedModel
from .nonlinear import NonlinearMixedModel
from .optimize import (BOUNDARY_SNAP, CONSTRAINED_METHODS, KKT, ConstrainedRun,
                       Identification, ReducedHessian, minimize_constrained)
from .parameters import SIGMA, ParameterSpace, sd_name
from .responses import LinearResponse, NonlinearResponse
from .linked_results import LinkedResults

__all__ = ["LinkedModel"]

#: A start is feasible when no constraint is violated by more than this, each constraint
#: measured in units of its gradient's length in z (``constraint_scales``): a distance
#: from the constraint's surface in z, whose coordinates have no units.
FEASIBILITY_TOL = 1e-6
#: A start counts as an optimum when its KKT residual (deviance units per unit of z) is
#: below this.
RUN_KKT_TOL = 1e-2
#: Newton steps on the KKT conditions the best optimum takes (``polish``).
POLISH_STEPS = 3
#: Restarts from a saddle the best optimum turned out to be (``_escape``).
ESCAPES = 2
#: An eigenvalue of the reduced Hessian within this fraction of the largest is zero: the
#: likelihood is flat along it (z has no units, so the fraction is the same in any).
FLAT_EIGENVALUE = 1e-8


def parameter_units(natural, J) -> np.ndarray:
    """Each natural parameter's unit for differencing: the larger of |Π_k| and how far
    it moves per unit of z (|∂Π_k/∂z|, the rows of J), 1 where both are 0.  A step
    relative to it is small next to Π_k whatever the data's units."""
    units = np.maximum(np.abs(natural), np.linalg.norm(J, axis=1))
    return np.where(units > 0, units, 1.0)


def _as_list(constraints):
    """One constraint or several, as a list (``make_constraint`` judges each)."""
    if constraints is None:
        return []
    if isinstance(constraints, (list, tuple)):
        return list(constraints)
    return [constraints]


class LinkedModel:
    """A mixed model with constraints on, and/or a mean depending on, its parameters,
    fitted by maximum likelihood of the full deviance over z = (θ, β, log σ).

    Linear models are built from a formula (``LinkedModel(formula, data, …)``) or a
    design (``from_design``); nonlinear ones by ``LinkedModel.nonlinear`` (``nlmer``'s
    arguments).  The response side (``linkmix.responses``) gives D and its gradient;
    this class owns the constraints as functions of z, the starts, the multi-start
    constrained fit and the analysis of its optima.

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
    engine : {"auto", "blocked", "blocked-sparse", "cholmod", "cholmod-supernodal"}
    missing : {"drop", "raise"}
    """

    def __init__(self, formula: str, data, *, constraints=None, mean=None,
                 engine: str = "auto", missing: str = "drop"):
        design = build_design(formula, data, missing=missing, drop_rank_deficient=False)
        self._setup(LinearResponse(design, engine), data, constraints, mean)

    @classmethod
    def from_design(cls, design, data, *, constraints=None, mean=None, engine: str = "auto"):
        """A linked model over an already built ``LMMDesign`` (its fixed-effects columns
        all kept) of the rows ``design.row_index`` of ``data`` (no formula parsing)."""
        model = cls.__new__(cls)
        model._setup(LinearResponse(design, engine), data, constraints, mean)
        return model

    @classmethod
    def nonlinear(cls, formula: str, data, random=None, *, fixed=None, model=None,
                  engine: str = "auto", missing: str = "drop", constraints=None):
        """A nonlinear mixed model with constraints between its named parameters
        (arguments as ``linkmix.nlmer``), by the Laplace approximation."""
        linked = cls.__new__(cls)
        nlmm = NonlinearMixedModel(formula, data, random, fixed=fixed, model=model,
                                   engine=engine, missing=missing)
        linked._setup(NonlinearResponse(nlmm), data, constraints, None)
        return linked

    @classmethod
    def from_model(cls, model, *, constraints=None):
        """A linked model over the design and data of a fitted model, with ``constraints``
        (added to a linked model's own, whose mean it keeps): what a profile likelihood
        or a test of a constraint refits.

        Parameters
        ----------
        model : LinearMixedModel, NonlinearMixedModel or LinkedModel
        """
        linked = cls.__new__(cls)
        extra = _as_list(constraints)
        if isinstance(model, LinkedModel):
            base = model.response
            response = (NonlinearResponse(base.nlmm) if isinstance(base, NonlinearResponse)
                        else LinearResponse(base.design, base.engine.kind))
            linked._setup(response, model.data, model.constraints + extra, model.mean)
        elif isinstance(model, NonlinearMixedModel):
            linked._setup(NonlinearResponse(model), model.data, extra, None)
        elif isinstance(model, LinearMixedModel):
            linked._setup(LinearResponse(model.design, model.engine.kind), model.data, extra,
                          None)
        else:
            raise FitError(f"a linked model is made from a LinearMixedModel, "
                           f"NonlinearMixedModel or LinkedModel, not {type(model).__name__}")
        return linked

    def _setup(self, response, data, constraints, mean):
        self.response = response
        design = response.design
        self.formula = design.formula.text
        self.data = data
        self.title = response.title
        self.space = space = ParameterSpace(design, response.coordinates)
        self.constraints = [make_constraint(c, space.names) for c in _as_list(constraints)]
        if mean is None or isinstance(mean, MeanTerm):  # a MeanTerm: another model's, same rows
            self.mean = mean
        else:
            self.mean = MeanTerm(mean, space.names, data.loc[design.row_index])
        response.bind(space, self._mean_at,
                      self._mean_jacobian if self.mean is not None else None)
        self.n = design.n
        self.fixed_rank = int(np.linalg.matrix_rank(design.X)) if design.p else 0
        self._eq = [c for c in self.constraints if c.kind == "eq"]
        self._ineq = [c for c in self.constraints if c.kind == "ineq"]
        self._scales = {"eq": np.ones(len(self._eq)), "ineq": np.ones(len(self._ineq))}
        self._searching = False

    # ---- the response side ----------------------------------------------------------
    @property
    def design(self):
        """The user's numbers (a new object after ``set_response``)."""
        return self.response.design

    @property
    def working(self):
        """The numbers z's coordinates refer to."""
        return self.response.working

    def deviance(self, z) -> float:
        """D(θ, β, σ) = −2 log L at ``z = (θ, β, log σ)``."""
        return self.response.deviance(z)

    def gradient(self, z) -> np.ndarray:
        """∇D at ``z`` (see ``linkmix.responses`` for which parts are exact)."""
        return self.response.gradient(z)

    def mean_hessian(self, z) -> np.ndarray:
        """∂²D/∂β∂β' at ``z`` over z's β coordinates (no constraint terms): the response's
        exact block where it has one; for a linear response with a linked mean f,
        (2/σ²)·(C'V₀⁻¹C − Σ_i r̃_i ∂²f_i/∂β∂β') with C = X + ∂f/∂β and r̃ the
        conditional residual (= V₀⁻¹(y − Xβ − f)), the second term over the fixed
        effects f reads (``_mean_curvature``); else central differences of ∂D/∂β with
        one Richardson step."""
        exact = self.response.beta_hessian(z)
        if exact is not None:
            return exact
        nt, p = self.space.n_theta, self.space.p
        if isinstance(self.response, LinearResponse):
            z = np.asarray(z, dtype=float)
            C = self.working.X + self._mean_jacobian(z)[:, nt:nt + p]
            sigma = self.space.split(z)[2]
            curvature = self._mean_curvature(z, self.conditional_residual(z))
            H = self.response.gram(z, C) - 2.0 * curvature / sigma**2
            return 0.5 * (H + H.T)
        # fourth order: Satterthwaite's df difference this Hessian again
        H = numdiff.richardson_jacobian(lambda points: [self.gradient(x)[nt:nt + p]
                                                        for x in points],
                                        z, rel_step=1e-4, indices=range(nt, nt + p))
        return 0.5 * (H + H.T)

    def base_start(self) -> np.ndarray:
        """z at the unconstrained maximum-likelihood fit."""
        return self.response.base_start()

    def random_effects(self, z) -> np.ndarray:
        """b̃ at ``z`` (user units, flat in θ's term order)."""
        return self.response.random_effects(z)

    def conditional_residual(self, z) -> np.ndarray:
        """r̃ = y − E[y | ũ] at ``z``."""
        return self.response.conditional_residual(z)

    def set_response(self, y, row_index=None) -> None:
        """Refit-ready for another response of the same layout (batch fits)."""
        self.response.set_response(y, row_index)

    # ---- parameters and user functions -------------------------------------
    def params_at(self, z) -> Params:
        return Params(self.space.names, self.space.index, self.space.natural_from_z(z),
                      "a constraint or mean")

    def _mean_at(self, z) -> np.ndarray:
        return self.mean(self.params_at(z)) if self.mean is not None else 0.0

    def _mean_read(self) -> list[int]:
        """Indices of the natural parameters the linked mean reads (all for a callable)."""
        used = self.mean.parameters_used
        return list(range(len(self.space.names))) if used is None else \
            [self.space.index[name] for name in used]

    def _exact_derivatives(self, expression, natural):
        """(f, ∂f/∂p, ∂²f/∂p∂p') at a natural vector over the parameters p a constraint
        or mean written as a string reads, exactly (its ``derivatives``); None for a
        callable (``expression`` None, or a mean's None) or where a derivative is not
        finite: then they are differenced."""
        exact = None if expression is None else \
            expression.derivatives(dict(zip(self.space.names, natural.tolist())))
        if exact is None or not all(np.all(np.isfinite(a)) for a in exact):
            return None
        return exact

    def _mean_jacobian(self, z) -> np.ndarray:
        """∂f/∂z (n × dim z) of the linked mean: ∂f/∂Π exactly for a mean written as a
        string, else differences in the parameters it reads, each in its unit
        (``parameter_units``), with one Richardson step (the gradient this enters is
        differenced again for Hessians); then ∂Π/∂z."""
        natural = self.space.natural_from_z(z)
        J = self.space.natural_jacobian(z)
        read = self._mean_read()
        exact = self._exact_derivatives(self.mean, natural)
        if exact is not None:
            return exact[1] @ J[read]
        units = parameter_units(natural, J)
        D = numdiff.richardson_jacobian(
            lambda points: [self.mean_at_natural(u * units) for u in points],
            natural / units, rel_step=1e-4, indices=read)
        return (D / units[read]) @ J[read]

    def _mean_curvature(self, z, weights) -> np.ndarray:
        """Σ_i w_i ∂²f_i/∂γ∂γ' over z's β coordinates, through β = Mγ: exactly for a mean
        written as a string, else second differences of w'f in the fixed effects the
        mean reads (in their units)."""
        nt, p = self.space.n_theta, self.space.p
        all_read = self._mean_read()
        read = [k for k in all_read if k < p]  # fixed effects come first
        out = np.zeros((p, p))
        if not read:
            return out
        natural = self.space.natural_from_z(z)
        J = self.space.natural_jacobian(z)
        M = J[read][:, nt:nt + p]
        exact = self._exact_derivatives(self.mean, natural)
        if exact is not None:
            where = [all_read.index(k) for k in read]
            H = np.einsum("i,ijk->jk", weights, exact[2])[np.ix_(where, where)]
            return M.T @ H @ M
        units = parameter_units(natural, J)[read]

        def weighted(values):
            moved = natural.copy()
            moved[read] = values * units
            return float(weights @ self.mean_at_natural(moved))

        # a wide step: its Richardson error is O(h⁴), and beta_cov differences this again
        H = numdiff.richardson_hessian(weighted, natural[read] / units, rel_step=1e-2)
        return M.T @ (H / np.outer(units, units)) @ M

    def mean_at_natural(self, natural):
        """f(Π) at a natural vector (0 without a linked mean)."""
        if self.mean is None:
            return 0.0
        return self.mean(Params(self.space.names, self.space.index, natural,
                                "a constraint or mean"))

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
        return (self.constraint_values_at(self.space.natural_from_z(z), group)
                / self._scale_of(group))

    def _scale_of(self, group) -> np.ndarray:
        return self._scales["eq" if group is self._eq else "ineq"]

    def set_constraint_scales(self, z) -> None:
        """Measure each constraint in units of its gradient's length in z at ``z`` (1
        where that is zero or not finite): the values, Jacobians and multipliers the fit
        works with are then those of c_i/|∇_z c_i|, whose size is a distance in z, so
        that its tolerances mean the same whatever the units of y and the covariates."""
        for key, group in (("eq", self._eq), ("ineq", self._ineq)):
            self._scales[key] = np.ones(len(group))
            if group:
                norms = np.linalg.norm(self._jacobian(group, z), axis=1)
                self._scales[key] = np.where(np.isfinite(norms) & (norms > 0), norms, 1.0)

    def constraint_values_at(self, natural, group) -> np.ndarray:
        """The constraints of ``group`` (``_eq`` or ``_ineq``) at a natural vector."""
        return np.array([self._call(con, self._env(con, natural)) for con in group])

    def eq_values(self, z) -> np.ndarray:
        """Residuals of the equality constraints (0 when satisfied)."""
        return self._constraint_values(self._eq, z)

    def ineq_values(self, z) -> np.ndarray:
        """Values of the inequality constraints (≥ 0 when satisfied)."""
        return self._constraint_values(self._ineq, z)

    def _constraint_derivatives(self, con, natural):
        """``_exact_derivatives`` of one constraint (a scalar: its only row)."""
        exact = self._exact_derivatives(con.fun if isinstance(con.fun, Expression) else None,
                                        natural)
        return None if exact is None else tuple(a[0] for a in exact)

    def _jacobian(self, group, z, step=1e-5) -> np.ndarray:
        """∂c/∂z = ∂c/∂Π · ∂Π/∂z (rows divided by the constraints' scales): ∂c/∂Π exactly
        for a constraint written as a string, else central differences in the named
        parameters each constraint reads (all of them for a callable), parameter k's
        step ``step`` times its unit (``parameter_units``); then the chain rule."""
        space = self.space
        natural = space.natural_from_z(z)
        J = space.natural_jacobian(z)
        steps = step * parameter_units(natural, J)
        grad_nat = np.zeros((len(group), len(natural)))
        for i, con in enumerate(group):
            exact = self._constraint_derivatives(con, natural)
            if exact is not None:
                grad_nat[i, [space.index[name] for name in con.parameters_used]] = exact[1]
                continue
            if con.parameters_used is not None:  # perturb one entry of one dict in place
                env = self._env(con, natural)
                for name in con.parameters_used:
                    k = space.index[name]
                    centre, h = env[name], steps[k]
                    env[name] = centre + h
                    up = self._call(con, env)
                    env[name] = centre - h
                    down = self._call(con, env)
                    env[name] = centre
                    grad_nat[i, k] = (up - down) / (2 * h)
                continue
            for k, h in enumerate(steps.tolist()):
                up, down = natural.copy(), natural.copy()
                up[k] += h
                down[k] -= h
                grad_nat[i, k] = (self._call(con, self._env(con, up))
                                  - self._call(con, self._env(con, down))) / (2 * h)
        return (grad_nat @ J) / self._scale_of(group)[:, None]

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
        (∂²D/∂(log σ)² = 4n at the optimum); β: the response's ``beta_scales`` (linear
        models: σ/sqrt(2·(X'X)_jj)) or, where that is None, like θ from a second
        difference of D.
        """
        nt, p = self.space.n_theta, self.space.p
        out = np.empty(len(z))
        out[-1] = 1.0 / math.sqrt(4.0 * self.n)
        beta_scales = self.response.beta_scales(z)
        second_difference = range(nt) if beta_scales is not None else range(nt + p)
        if beta_scales is not None:
            out[nt:nt + p] = beta_scales
        curvature = numdiff.curvatures(self.deviance, z, lower=self.space.z_lower(),
                                       rel_step=1e-3, indices=second_difference)
        for k, c in zip(second_difference, curvature.tolist()):
            out[k] = 1.0 / math.sqrt(c) if c > 1e-8 else 1.0
        return np.clip(out, 1e-8, 1e4)

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
            nt, p = self.space.n_theta, self.space.p
            return self.space.from_user(z[:nt], z[nt:nt + p], math.exp(z[-1]))
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
    def fit(self, *, n_starts: int = 1, method: str = "SLSQP", seed: int = 0, start=None,
            derivatives: bool = True):
        """Maximise the likelihood under the constraints from ``n_starts`` starts.

        Parameters
        ----------
        n_starts, method, seed, start
            Number of starts, ``"SLSQP"`` or ``"trust-constr"``, the seed of the spread
            starts, and start values (a name → value mapping).
        derivatives : bool
            Compute the reduced Hessian at the optimum (SEs, local identification), as
            lme4's ``calc.derivs``; about 2·dim z gradients.  False skips it for callers
            that only need the optimum (a profile's refits): SEs are then NaN.

        Returns
        -------
        LinkedResults
            The best optimum, every distinct optimum, and the identifiability verdict.
        """
        arguments.choice(method, "method", CONSTRAINED_METHODS)
        n_starts = arguments.count(n_starts, "n_starts")
        seed = arguments.count(seed, "seed", minimum=0)
        derivatives = arguments.flag(derivatives, "derivatives")
        with np.errstate(all="ignore"):  # trial points may overflow; results are checked
            return self._fit(n_starts, method, seed, start, derivatives)

    def _fit(self, n_starts, method, seed, start, derivatives):

        starts = self.starts(n_starts, seed, start)
        # Bad constraints and means fail here, once, with their own message.
        self.eq_values(starts[0]), self.ineq_values(starts[0]), self._mean_at(starts[0])
        self.set_constraint_scales(starts[0])
        # Spread starts are far from the optimum, where SLSQP's unit initial Hessian sends
        # its first steps to absurd points: they run on w = z / s (unit-scaled).  The base
        # start is the unconstrained optimum, close by, and converges faster unscaled.
        spread_scale = self.scales(starts[0]) if len(starts) > 1 else None
        runs = [self._run(z0, np.ones(len(z0)) if i == 0 else spread_scale, method)
                for i, z0 in enumerate(starts)]
        feasible = [r for r in runs if self._succeeded(r)]
        if not feasible:
            tried = [r for r in runs if r.x_final is not None]
            if not tried:
                raise ConstraintError(runs[0].message.removeprefix("failed: "))
            closest = min(tried, key=lambda r: r.max_violation)
            raise FitError(
                f"the constraints could not be satisfied from {len(runs)} start(s): the "
                f"smallest violation reached is {closest.max_violation:.3g} (a distance in "
                f"the optimiser's coordinates; {closest.message}); they may be infeasible")
        if derivatives:
            for _ in range(ESCAPES + 1):
                best = min(feasible, key=lambda r: r.fun_final)
                self._finish(best)
                escape = self._escape(best, method)
                if escape is None:
                    break
                runs.append(escape)
                feasible.append(escape)
        return LinkedResults(self, runs, feasible, method, derivatives)

    def _succeeded(self, run) -> bool:
        return (run.x_final is not None and math.isfinite(run.fun_final)
                and run.max_violation <= FEASIBILITY_TOL and run.kkt_residual <= RUN_KKT_TOL)

    def _run(self, z0, s, method) -> ConstrainedRun:
        """One constrained optimisation from ``z0`` on w = z/s (or the start itself, moved
        onto the constraints, where that is already an optimum)."""
        eq, ineq = bool(self._eq), bool(self._ineq)
        try:
            self._searching = True
            z_start = z0
            if self.project_starts:
                z0 = self._onto_constraints_along_null_space(z0)
                run = self._optimal_already(z_start, z0) if z0 is not z_start else None
                if run is not None:
                    return run
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
        return run

    def _finish(self, run) -> None:
        """Polish a run's optimum (``polish``) and analyse it to second order
        (``reduced_hessian``), in place."""
        run.x_final, run.kkt = self.polish(run.x_final, run.kkt or self.kkt(run.x_final))
        run.fun_final, run.kkt_residual = float(self.deviance(run.x_final)), run.kkt.residual
        run.second_order = self.reduced_hessian(run.x_final, run.kkt)

    def _escape(self, run, method) -> ConstrainedRun | None:
        """A run from a point below ``run``'s where its reduced Hessian has a negative
        eigenvalue (a saddle on the manifold, as SLSQP can stop at from a start on a
        ridge): the lowest of z ± α·v (v that direction in z, α = 10⁻³…10⁻¹·max(1, |z|),
        within the bounds), if it is lower and the run from it succeeds and ends lower;
        else None."""
        second = run.second_order
        if second is None or not second.negative:
            return None
        z = run.x_final
        direction = second.directions[:, 0]
        lower, upper = self.space.z_lower(), self.space.z_upper()
        reach = max(1.0, float(np.max(np.abs(z))))
        probes = [np.clip(z + sign * size * reach * direction, lower, upper)
                  for size in (1e-3, 1e-2, 1e-1) for sign in (1.0, -1.0)]
        values = [self.deviance(x) for x in probes]
        lowest = int(np.argmin(values))
        if not values[lowest] < run.fun_final:
            return None
        escape = self._run(probes[lowest], np.ones(len(z)), method)
        return escape if self._succeeded(escape) and escape.fun_final < run.fun_final else None

    # ---- analysis at an optimum ---------------------------------------------------
    def active_jacobian(self, z, grad) -> np.ndarray:
        """Rows: equality constraints, active inequalities, and θ held at its bound."""
        rows = [self.active_constraint_rows(z, z)]
        lower = self.space.z_lower()
        at_bound = np.isfinite(lower) & (z - lower <= 1e-8) & (grad > 0)
        for k in np.flatnonzero(at_bound):
            e = np.zeros(len(z))
            e[k] = 1.0
            rows.append(e[None, :])
        return np.vstack(rows)

    def lagrangian_hessian(self, z, multipliers, step: float = 1e-4, grad=None) -> np.ndarray:
        """∇²(D − λ'c) at ``z`` (``grad``: ∇D at ``z`` where the caller has it, as from
        ``kkt``).  Where the response has an exact (β, log σ) block (linear models; with
        a linked mean, its β block is ``mean_hessian``'s), that and its θ columns
        differenced, less λ'∇²c (only where ∇D does not vanish); otherwise central
        differences of the Lagrangian's gradient."""
        z = np.asarray(z, dtype=float)
        linear_mean = self.mean is not None and isinstance(self.response, LinearResponse)
        exact = self.response.hessian(z, grad, step,
                                      beta_block=self.mean_hessian(z) if linear_mean else None)
        if exact is None:
            def lagrangian_grad(x):
                g = self.gradient(x)
                if len(multipliers) and self.constraints:
                    J = self._constraint_rows(x)
                    g = g - J.T @ multipliers[: J.shape[0]]
                return g

            # fourth order: Satterthwaite's df and the polish read this Hessian
            H = numdiff.richardson_jacobian(lambda points: [lagrangian_grad(x) for x in points],
                                            z, lower=self.space.z_lower(), rel_step=step)
            return 0.5 * (H + H.T)
        H, grad = exact
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
            # J is differenced itself: a step of 1e-3 keeps its rounding from dominating,
            # and one Richardson step the truncation
            return numdiff.richardson_jacobian(lambda points: [weighted(x) for x in points],
                                               z, lower=self.space.z_lower(), rel_step=1e-3)
        space = self.space
        natural = space.natural_from_z(z)
        J = space.natural_jacobian(z)
        # each parameter differenced in its own unit (as ``_jacobian``), c_i over its scale
        units = parameter_units(natural, J)
        scales = np.concatenate([self._scales["eq"], self._scales["ineq"]])
        nt, p = space.n_theta, space.p
        theta, _, sigma = space.split(z)
        factor = space.sd_factor
        out = np.zeros((len(z), len(z)))
        for weight, scale, con in zip(lam, scales, constraints):
            if weight == 0:
                continue
            used = list(con.parameters_used)
            idx = [space.index[name] for name in used]
            grad = np.zeros(len(natural))
            hess = np.zeros((len(natural), len(natural)))
            exact = self._constraint_derivatives(con, natural)
            if exact is not None:
                grad[idx] = exact[1] / scale
                hess[np.ix_(idx, idx)] = exact[2] / scale
            else:
                env = self._env(con, natural)

                def of_used(values):  # c/scale over the parameters it reads, in units
                    env.update(zip(used, values * units[idx]))
                    return self._call(con, env) / scale

                g_used, h_used, _, _ = numdiff.hessian(of_used, natural[idx] / units[idx],
                                                       rel_step=1e-4)
                env.update(zip(used, natural[idx]))
                grad[idx] = g_used / units[idx]
                hess[np.ix_(idx, idx)] = h_used / np.outer(units[idx], units[idx])
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

    def _constraint_rows(self, z) -> np.ndarray:
        rows = []
        if self._eq:
            rows.append(self.eq_jacobian(z))
        if self._ineq:
            rows.append(self.ineq_jacobian(z))
        return np.vstack(rows) if rows else np.zeros((0, len(z)))

    def active_constraint_rows(self, x, z) -> np.ndarray:
        """The Jacobian at ``x`` of the user's constraints active at ``z``: every
        equality, and the inequalities that hold with equality at ``z``."""
        rows = []
        if self._eq:
            rows.append(self.eq_jacobian(x))
        if self._ineq:
            active = np.abs(self.ineq_values(z)) <= FEASIBILITY_TOL
            if active.any():
                rows.append(self.ineq_jacobian(x)[active])
        return np.vstack(rows) if rows else np.zeros((0, len(x)))

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

    def _constraint_multipliers(self, z, kkt: KKT) -> np.ndarray:
        """The multipliers of the user's constraints (equalities first, then every
        inequality, 0 where inactive) from a KKT analysis at ``z``."""
        lam = kkt.multipliers
        out = np.zeros(len(self._eq) + len(self._ineq))
        out[: len(self._eq)] = lam[: len(self._eq)]
        if self._ineq:
            active = np.abs(self.ineq_values(z)) <= FEASIBILITY_TOL
            out[len(self._eq):][active] = lam[len(self._eq):len(self._eq) + active.sum()]
        return out

    def _active_values(self, z, active_at) -> np.ndarray:
        """The residuals matching the rows of ``active_jacobian`` at ``active_at``:
        equalities, the inequalities active there, and 0 for θ held at its bound."""
        values = [self.eq_values(z)] if self._eq else []
        if self._ineq:
            active = np.abs(self.ineq_values(active_at)) <= FEASIBILITY_TOL
            values.append(self.ineq_values(z)[active])
        return np.concatenate(values) if values else np.zeros(0)

    def _feasible(self, z) -> bool:
        """Whether every constraint holds at ``z`` within ``FEASIBILITY_TOL``."""
        violation = np.concatenate([np.abs(self.eq_values(z)) if self._eq else [],
                                    -self.ineq_values(z) if self._ineq else []])
        return not violation.size or bool(np.max(violation) <= FEASIBILITY_TOL)

    def polish(self, z, kkt: KKT):
        """(z, KKT there) from a constrained optimum.

        First θ entries within ``BOUNDARY_SNAP`` of their bound are tried on it (kept
        where D does not rise and the constraints still hold), as a plain fit's are: D
        is flat there, and SLSQP stops anywhere near the bound.  Then up to
        ``POLISH_STEPS`` Newton steps on the KKT conditions ∇D − J'λ = 0, c = 0 of the
        constraints active at z and the coordinates on their bounds (held there),
        ``[H J'; J 0][dz; −dλ] = −[∇D − J'λ; c]`` with H the Lagrangian's Hessian at the
        first point (a chord: the steps are small next to H's changes), each taken
        while it lowers the KKT residual, keeps the constraints within
        ``FEASIBILITY_TOL`` and z within its bounds.  SLSQP stops with a KKT residual of
        about 1e-4 (deviance per unit of z), which moves Satterthwaite's df by 1e-5: a
        fit in other units would report other df."""
        z = np.asarray(z, dtype=float)
        lower, upper = self.space.z_lower(), self.space.z_upper()
        near = np.isfinite(lower) & (z > lower) & (z <= lower + BOUNDARY_SNAP)
        if near.any():
            snapped = np.where(near, lower, z)
            if self.deviance(snapped) <= self.deviance(z) and self._feasible(snapped):
                z, kkt = snapped, self.kkt(snapped)
        H = None
        for _ in range(POLISH_STEPS):
            bound = np.flatnonzero(np.isfinite(lower) & (z <= lower))
            J = np.vstack([self.active_constraint_rows(z, z), np.eye(len(z))[bound]])
            multipliers = np.linalg.lstsq(J.T, kkt.gradient, rcond=None)[0] if len(J) else \
                np.zeros(0)
            if H is None:  # the chord: one Hessian for every step
                H = self.lagrangian_hessian(z, self._constraint_multipliers(z, kkt),
                                            grad=kkt.gradient)
            m = J.shape[0]
            c = self._active_values(z, z)
            c = np.concatenate([c, np.zeros(m - len(c))])   # bound coordinates: held
            K = np.block([[H, J.T], [J, np.zeros((m, m))]])
            rhs = -np.concatenate([kkt.gradient - J.T @ multipliers, c])
            trial = z + np.linalg.lstsq(K, rhs, rcond=None)[0][:len(z)]
            trial[bound] = lower[bound]
            if not (np.all(np.isfinite(trial)) and np.all(trial >= lower)
                    and np.all(trial <= upper) and math.isfinite(self.deviance(trial))
                    and self._feasible(trial)):
                break
            new = self.kkt(trial)
            if not new.residual < kkt.residual:
                break
            z, kkt = trial, new
        return z, kkt

    def reduced_hessian(self, z, kkt: KKT) -> ReducedHessian:
        """Hessian of −log L on the constraint manifold at an optimum, and the covariance
        of z it implies (``None`` when the reduced Hessian is singular)."""
        z = np.asarray(z, dtype=float)
        J = kkt.active_jacobian
        H = self.lagrangian_hessian(z, self._constraint_multipliers(z, kkt), grad=kkt.gradient)
        N = scipy.linalg.null_space(J) if J.shape[0] else np.eye(len(z))
        reduced = 0.5 * N.T @ H @ N                 # Hessian of −log L on the manifold
        if not reduced.size:
            return ReducedHessian(np.zeros(0), False, np.zeros((len(z), len(z))))
        eig, vectors = np.linalg.eigh(reduced)
        tol = FLAT_EIGENVALUE * float(np.max(np.abs(eig)))
        negative, flat = eig < -tol, np.abs(eig) <= tol
        cov_z = None if (negative | flat).any() else N @ np.linalg.solve(reduced, N.T)
        return ReducedHessian(eig, bool(flat.any()), cov_z, H, int(negative.sum()),
                              N @ vectors[:, negative | flat])

    def identification(self, z) -> Identification:
        """The rank of X with the equality constraints' β-gradients appended, whether it
        is full, and the number of free parameters: dim z − rank(∂c/∂z) − the directions
        of β that neither X nor the constraints pin down."""
        p, nt = self.space.p, self.space.n_theta
        J = self.eq_jacobian(z) if self._eq else np.zeros((0, len(z)))
        eq_rank = int(np.linalg.matrix_rank(J)) if len(J) else 0
        rank = int(np.linalg.matrix_rank(np.vstack([self.working.X, J[:, nt:nt + p]]))) if p else 0
        return Identification(rank, rank == p, self.space.dim_z - eq_rank - (p - rank))
