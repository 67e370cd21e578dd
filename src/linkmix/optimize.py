"""Optimisation of θ under bounds, and the record of how a fit got where it is.

Owns the choice of optimiser (switchable: nlopt's BOBYQA by default, as lme4
uses; scipy's COBYQA), the post-processing of the optimum (snapping tiny
boundary values to the boundary when that does not worsen the objective), and
the convergence checks (the optimiser's own status and a finite-difference
gradient at the optimum).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .numdiff import jacobian

__all__ = ["OptSummary", "minimize_bounded", "OPTIMIZERS"]

OPTIMIZERS = ("bobyqa", "cobyqa")

#: θ entries on a zero lower bound closer than this are tried at the bound.
BOUNDARY_SNAP = 1e-5
#: Largest finite-difference gradient component (deviance units) accepted at an
#: interior optimum: lme4's check.conv.grad tolerance.
GRADIENT_TOL = 2e-3
#: First step of the one restart made when the gradient check fails.
RESTART_STEP = 1e-2


@dataclass
class OptSummary:
    """What the optimiser did: start, end, evaluations, status and checks."""

    optimizer: str
    x_initial: np.ndarray
    x_final: np.ndarray = None
    fun_initial: float = math.nan
    fun_final: float = math.nan
    n_evaluations: int = 0
    converged: bool = False
    message: str = ""
    max_gradient: float = math.nan
    tolerances: dict = field(default_factory=dict)
    seconds: float = 0.0
    restarts: int = 0
    log: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"optimizer": self.optimizer, "x_initial": list(map(float, self.x_initial)),
                "x_final": list(map(float, self.x_final)), "fun_initial": self.fun_initial,
                "fun_final": self.fun_final, "n_evaluations": self.n_evaluations,
                "converged": self.converged, "message": self.message,
                "max_gradient": self.max_gradient, "restarts": self.restarts,
                "tolerances": self.tolerances,
                "seconds": self.seconds}


def _run_bobyqa(fun, x0, lower, ftol_abs, xtol_abs, maxeval, initial_step):
    import nlopt

    opt = nlopt.opt(nlopt.LN_BOBYQA, len(x0))
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -float('inf')))
    opt.set_min_objective(lambda x, grad: fun(x))
    opt.set_ftol_abs(ftol_abs)
    opt.set_xtol_abs(xtol_abs)
    opt.set_maxeval(maxeval)
    if initial_step is not None:
        opt.set_initial_step(initial_step)
    try:
        x = opt.optimize(np.asarray(x0, dtype=float))
    except nlopt.RoundoffLimited:
        return opt.last_optimize_result(), "roundoff limited", None
    code = opt.last_optimize_result()
    names = {nlopt.SUCCESS: "success", nlopt.STOPVAL_REACHED: "stopval reached",
             nlopt.FTOL_REACHED: "ftol reached", nlopt.XTOL_REACHED: "xtol reached",
             nlopt.MAXEVAL_REACHED: "maximum number of evaluations reached",
             nlopt.MAXTIME_REACHED: "maximum time reached"}
    ok = code in (nlopt.SUCCESS, nlopt.FTOL_REACHED, nlopt.XTOL_REACHED)
    return ok, names.get(code, f"nlopt status {code}"), x


def _run_cobyqa(fun, x0, lower, ftol_abs, xtol_abs, maxeval, initial_step):
    from scipy.optimize import Bounds, minimize

    bounds = Bounds(lower, np.full(len(x0), np.inf))
    res = minimize(fun, x0, method="COBYQA", bounds=bounds,
                   options={"maxfev": maxeval, "final_tr_radius": max(xtol_abs, 1e-10),
                            "initial_tr_radius": initial_step or 1.0})
    return bool(res.success), str(res.message), res.x


def minimize_bounded(fun, x0, lower, *, optimizer: str = "bobyqa", ftol_abs: float = 1e-8,
                     xtol_abs: float = 1e-8, maxeval: int = 100_000, initial_step=None,
                     check_gradient: bool = True) -> OptSummary:
    """Minimise ``fun`` over x ≥ ``lower`` (entries of ``lower`` may be -inf).

    After the optimiser stops, entries within ``BOUNDARY_SNAP`` of a finite
    lower bound are moved onto it when the objective does not increase, and a
    central (one-sided at a bound) finite-difference gradient is computed: the
    fit counts as converged when the optimiser reports success and no component
    pointing into the feasible region exceeds ``GRADIENT_TOL``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    x0 = np.asarray(x0, dtype=float)
    lower = np.asarray(lower, dtype=float)
    summary = OptSummary(optimizer=optimizer, x_initial=x0.copy(),
                         tolerances={"ftol_abs": ftol_abs, "xtol_abs": xtol_abs,
                                     "maxeval": maxeval})
    log = summary.log

    def recorded(x):
        value = float(fun(x))
        log.append((np.array(x, dtype=float), value))
        return value

    start = time.perf_counter()
    runner = _run_bobyqa if optimizer == "bobyqa" else _run_cobyqa
    ok, message, x = runner(recorded, x0, lower, ftol_abs, xtol_abs, maxeval, initial_step)
    summary.n_evaluations = len(log)
    summary.fun_initial = log[0][1] if log else math.nan
    if x is None:  # take the best point seen
        x = min(log, key=lambda item: item[1])[0]
    x = np.maximum(np.asarray(x, dtype=float), lower)
    best = fun(x)

    near = np.isfinite(lower) & (x > lower) & (x - lower < BOUNDARY_SNAP)
    if near.any():
        snapped = np.where(near, lower, x)
        value = fun(snapped)
        if value <= best:
            x, best = snapped, value

    summary.max_gradient = _gradient_check(fun, x, lower) if check_gradient else math.nan
    grad_ok = not check_gradient or summary.max_gradient <= GRADIENT_TOL
    if ok and not grad_ok and math.isfinite(best):
        # Stopped on a flat ridge: one restart from there, with a small first step.
        ok, message, x_new = runner(recorded, x, lower, ftol_abs, xtol_abs, maxeval,
                                    RESTART_STEP)
        summary.restarts += 1
        summary.n_evaluations = len(log)
        if x_new is not None:
            x_new = np.maximum(np.asarray(x_new, dtype=float), lower)
            value = fun(x_new)
            if value <= best:
                x, best = x_new, value
        summary.max_gradient = _gradient_check(fun, x, lower)
        grad_ok = summary.max_gradient <= GRADIENT_TOL
    summary.converged = bool(ok and math.isfinite(best) and grad_ok)
    if ok and not grad_ok:
        message += (f"; scaled finite-difference gradient {summary.max_gradient:.3g} exceeds "
                    f"{GRADIENT_TOL:g}")
    summary.message = message
    summary.x_final = x
    summary.fun_final = best
    summary.seconds = time.perf_counter() - start
    fun(x)  # leave the objective's state at the optimum
    return summary


def _gradient_check(fun, x, lower) -> float:
    """Size of the gradient at ``x`` that could still decrease ``fun``.

    The raw finite-difference gradient over the coordinates free to move is
    returned when it is within ``GRADIENT_TOL``.  Otherwise, as lme4's
    check.conv.grad does, it is scaled by the Hessian (``max |L⁻¹g|`` with
    ``H = LL'``), which is invariant to the parametrisation's scaling; a
    Hessian that is not positive definite gives ``inf``.
    """
    f0 = fun(x)
    steps = 1e-4 * np.maximum(1.0, np.abs(x))
    grad = jacobian(fun, x, lower=lower, rel_step=1e-4, f0=f0)[0]
    # on a bound only the inward derivative matters, and only if it points inward
    at_bound = x - steps < lower
    grad[at_bound] = np.minimum(0.0, grad[at_bound])
    free = ~at_bound | (grad < 0)
    raw = float(np.max(np.abs(grad), initial=0.0))
    if raw <= GRADIENT_TOL:
        return raw
    idx = np.flatnonzero(free)
    H = np.empty((len(idx), len(idx)))
    for a, i in enumerate(idx):
        for b, j in enumerate(idx[: a + 1]):
            hi, hj = steps[i], steps[j]
            def at(di, dj):
                z = x.copy()
                z[i] += di
                z[j] += dj
                return fun(z)
            H[a, b] = H[b, a] = (at(hi, hj) - at(hi, -hj) - at(-hi, hj) + at(-hi, -hj)) / (4 * hi * hj)
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return math.inf
    return float(np.max(np.abs(np.linalg.solve(L, grad[idx]))))


CONSTRAINED_METHODS = ("SLSQP", "trust-constr")


@dataclass
class ConstrainedRun:
    """One local constrained optimisation: where it started, ended, and how."""

    x_initial: np.ndarray
    x_final: np.ndarray = None
    fun_final: float = math.inf
    success: bool = False
    message: str = ""
    n_iterations: int = 0
    n_evaluations: int = 0
    max_violation: float = math.inf
    kkt_residual: float = math.inf
    kkt: dict = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {"x_initial": list(map(float, self.x_initial)),
                "x_final": None if self.x_final is None else list(map(float, self.x_final)),
                "fun_final": self.fun_final, "success": self.success, "message": self.message,
                "n_iterations": self.n_iterations, "n_evaluations": self.n_evaluations,
                "max_violation": self.max_violation, "kkt_residual": self.kkt_residual}


def minimize_constrained(fun, jac, x0, lower, *, eq=None, eq_jac=None, ineq=None,
                         ineq_jac=None, method: str = "SLSQP", maxiter: int = 500,
                         tol: float = 1e-10, upper=None) -> ConstrainedRun:
    """Minimise ``fun`` subject to ``eq(x) = 0``, ``ineq(x) ≥ 0`` and ``lower ≤ x ≤ upper``.

    ``eq``/``ineq`` return arrays (possibly empty) and ``*_jac`` their Jacobians.
    ``method`` is scipy's ``"SLSQP"`` or ``"trust-constr"``.  Failures of the
    user's functions propagate; the caller decides what a failed start means.
    """
    from scipy.optimize import BFGS, Bounds, NonlinearConstraint, minimize

    if method not in CONSTRAINED_METHODS:
        raise ValueError(f"method must be one of {CONSTRAINED_METHODS}, not {method!r}")
    x0 = np.asarray(x0, dtype=float)
    fun, eq, ineq = _finite(fun), _finite(eq), _finite(ineq)
    upper = np.full(len(x0), np.inf) if upper is None else np.asarray(upper, dtype=float)
    bounds = Bounds(lower, upper)
    run = ConstrainedRun(x_initial=x0.copy())
    n_eq = len(eq(x0)) if eq is not None else 0
    n_ineq = len(ineq(x0)) if ineq is not None else 0
    if method == "SLSQP":
        cons = []
        if n_eq:
            cons.append({"type": "eq", "fun": eq, "jac": eq_jac})
        if n_ineq:
            cons.append({"type": "ineq", "fun": ineq, "jac": ineq_jac})
        res = minimize(fun, x0, jac=jac, method="SLSQP", bounds=bounds, constraints=cons,
                       options={"maxiter": maxiter, "ftol": tol})
    else:
        cons = []
        if n_eq:
            cons.append(NonlinearConstraint(eq, 0.0, 0.0, jac=eq_jac, hess=BFGS()))
        if n_ineq:
            cons.append(NonlinearConstraint(ineq, 0.0, np.inf, jac=ineq_jac, hess=BFGS()))
        with warnings.catch_warnings():  # BFGS's notice of a zero step at convergence
            warnings.filterwarnings("ignore", "delta_grad == 0.0", UserWarning)
            res = minimize(fun, x0, jac=jac, hess=BFGS(), method="trust-constr",
                           bounds=bounds, constraints=cons,
                           options={"maxiter": maxiter * 4, "gtol": 1e-8, "xtol": 1e-12})
    x = np.clip(np.asarray(res.x, dtype=float), lower, upper)
    run.x_final = x
    run.fun_final = float(fun(x))
    run.success = bool(res.success)
    run.message = str(res.message)
    run.n_iterations = int(getattr(res, "nit", 0))
    run.n_evaluations = int(getattr(res, "nfev", 0))
    violation = 0.0
    if n_eq:
        violation = max(violation, float(np.max(np.abs(eq(x)))))
    if n_ineq:
        violation = max(violation, float(np.max(np.maximum(0.0, -np.asarray(ineq(x))))))
    run.max_violation = violation
    return run


#: What an optimiser is shown in place of ±inf: its line search then steps back.
_HUGE = 1e100


def _finite(fn):
    """``fn`` with ±inf replaced by ±1e100 (NaN is left for the caller to catch)."""
    if fn is None:
        return None

    def wrapped(x):
        value = fn(x)
        if np.ndim(value) == 0:
            return value if math.isfinite(value) or math.isnan(value) else math.copysign(_HUGE, value)
        value = np.asarray(value, dtype=float)
        if np.isinf(value).any():
            value = np.where(np.isinf(value), np.copysign(_HUGE, value), value)
        return value
    return wrapped
