"""Optimisation of θ under bounds, and the record of how a fit got where it is.

Owns the choice of optimiser (switchable: nlopt's BOBYQA by default, as lme4
uses; scipy's COBYQA; scipy's L-BFGS-B where the exact gradient is given; Newton's
method where the exact Hessian is, ``minimize_newton``, compiled in ``_dense``), the
post-processing of the optimum (snapping tiny
boundary values to the boundary when that does not worsen the objective), and
the convergence checks, lme4's: the optimiser's own status, the finite-difference
gradient at the optimum, and the finite-difference Hessian over the coordinates
off their bounds (negative eigenvalues: not a minimum; a zero eigenvalue: the
parameters are not uniquely determined, flagged as ``degenerate``).  Also one Newton
step from the checks' derivatives (``newton_polish``) for callers that start from an
optimum and need its gradient smaller than an ``ftol``-stopped optimiser leaves it.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _dense
from .linalg import solve_triangular
from .numdiff import hessian, step

__all__ = ["OptSummary", "minimize_bounded", "minimize_newton", "OPTIMIZERS",
           "OPTIMIZER_OPTIONS", "SINGULAR_HESSIAN"]

OPTIMIZERS = ("bobyqa", "cobyqa", "lbfgs")
#: The options ``minimize_bounded`` takes besides the optimiser's name.
OPTIMIZER_OPTIONS = ("ftol_abs", "xtol_abs", "maxeval", "initial_step")

#: What a fit with a zero Hessian eigenvalue (``OptSummary.degenerate``) is told.
SINGULAR_HESSIAN = ("Hessian is numerically singular: parameters are not uniquely determined "
                    "(the criterion is flat in some direction of θ)")
#: θ entries on a zero lower bound closer than this are tried at the bound: the checks'
#: differencing step (1e-4 below 1), so that a coordinate they treat as on its bound is
#: there (an optimiser stops anywhere within ~1e-4 of a bound where f is flat).
BOUNDARY_SNAP = 1e-4
#: Largest finite-difference gradient component (deviance units) accepted at an
#: interior optimum: lme4's check.conv.grad tolerance.
GRADIENT_TOL = 2e-3
#: Decrease of f (its units: deviance) the checks' quadratic model may still promise
#: at an accepted optimum; above it the optimiser runs on (``_expected_decrease``).
#: Fits stopped by ftol_abs = 1e-8 promise 3e-12 (median) to 2e-8 (90%) on 300 random
#: models; those on a flat ridge 1e-6 to 2e-4, which the ridge then gives.
RIDGE_DECREASE = 1e-6
#: First step of the one restart made when the gradient check fails.
RESTART_STEP = 1e-2
#: Relative rounding of an evaluation of the objective (about 10 times the sd measured
#: on deviances of 1e5: 2e-10 to 4e-10), within which a Newton step that does not
#: lower it is still taken.
ROUNDING = 1e-14
#: Smallest relative decrease L-BFGS-B is asked to resolve: 100 times ``ROUNDING``.
#: Below it its line searches fail on rounding and restart (a simulated 4-factor design
#: took 26 evaluations instead of 13 at ftol_abs = 1e-8, 3e-14 of its deviance).
LBFGS_FTOL_FLOOR = 100 * ROUNDING
#: L-BFGS-B stops when its next point is within this many differencing steps of its
#: lowest point and f cannot resolve the step (``_within_stencil``).
REUSE_WITHIN = 1e-2
#: Most chord steps (Newton steps with the checks' Hessian) the polish takes after its
#: Newton step where the exact gradient is given.  Satterthwaite's df move about ten
#: times as much as θ relative; one Newton step from an ftol-stopped optimum left θ
#: 2e-8 (relative) from where fits of the same data in other units stopped.
CHORD_STEPS = 3
#: Most iterations of ``minimize_newton`` (it takes 5-15 on models that converge).
NEWTON_ITERATIONS = 50
_EPS = float(np.finfo(float).eps)


@dataclass
class DerivativeChecks:
    """lme4's convergence checks at a point (``_derivative_checks``).

    Attributes
    ----------
    max_gradient : float
        The largest gradient component that could still decrease the function (scaled
        by the Hessian when above ``GRADIENT_TOL``; ``inf`` where H is not positive
        definite or the differences are not finite).
    eigenvalues : ndarray
        Of the Hessian over the interior coordinates.
    negative, zero : int
        Eigenvalues below −τ and within ±τ (τ: see ``_derivative_checks``).
    gradient : ndarray
        All coordinates; at a bound, only an inward-pointing derivative (else 0).
    hessian : ndarray
        Over the ``interior`` coordinates.
    interior : ndarray of int
    """

    max_gradient: float
    eigenvalues: np.ndarray
    negative: int
    zero: int
    gradient: np.ndarray
    hessian: np.ndarray
    interior: np.ndarray
    #: coordinates on their bound along which f falls inward (a saddle or maximum there)
    escape: list = field(default_factory=list)
    #: directions (vectors over all coordinates) along which f is flat: eigenvectors of a
    #: zero eigenvalue, and coordinates on their bound with zero curvature inward
    flat: list = field(default_factory=list)
    #: τ of the eigenvalues' classification
    tau: float = 0.0


@dataclass
class KKT:
    """First-order analysis of a constrained optimum: ∇D, the active constraints'
    Jacobian J, least-squares multipliers λ and the residual max |∇D − J'λ|."""

    gradient: np.ndarray
    active_jacobian: np.ndarray
    multipliers: np.ndarray
    residual: float


@dataclass
class ReducedHessian:
    """Second-order analysis of a constrained optimum: eigenvalues of the Hessian of
    −log L on the constraint manifold, whether it is singular (a zero eigenvalue: the
    likelihood is flat along it), the covariance of z it implies (None when singular or
    not positive definite), the Hessian of the Lagrangian D − λ'c in z it came from
    (None where there was nothing to reduce), how many eigenvalues are negative (a
    saddle, not a maximum of the likelihood) and the directions in z of the negative
    ones, then the zero ones (columns, most negative first)."""

    eigenvalues: np.ndarray
    singular: bool
    cov_z: np.ndarray | None
    lagrangian: np.ndarray | None = None
    negative: int = 0
    directions: np.ndarray | None = None


@dataclass
class Identification:
    """Whether a constrained model's fixed effects are pinned down: the rank of X with
    the equality constraints' β-gradients appended, whether that completes X's column
    rank, and the number of free parameters the likelihood sees."""

    rank: int
    completes_rank: bool
    n_free: int


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
    hessian_eigenvalues: np.ndarray = None
    degenerate: bool = False
    #: directions in x along which the checks found the function flat (``degenerate``)
    flat_directions: list = field(default_factory=list)
    log: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"optimizer": self.optimizer, "x_initial": list(map(float, self.x_initial)),
                "x_final": list(map(float, self.x_final)), "fun_initial": self.fun_initial,
                "fun_final": self.fun_final, "n_evaluations": self.n_evaluations,
                "converged": self.converged, "message": self.message,
                "max_gradient": self.max_gradient, "restarts": self.restarts,
                "hessian_eigenvalues": None if self.hessian_eigenvalues is None else
                list(map(float, self.hessian_eigenvalues)), "degenerate": self.degenerate,
                "flat_directions": [list(map(float, v)) for v in self.flat_directions],
                "tolerances": self.tolerances,
                "seconds": self.seconds}


#: Per thread, nlopt optimisers by (dimension, bounds, settings): setting one up costs
#: about as much as a small model's whole optimisation, and a batch makes thousands.
_BOBYQA = threading.local()


def _bobyqa(n, lower, ftol_abs, xtol_abs, maxeval, initial_step):
    import nlopt

    key = (n, lower.tobytes(), ftol_abs, xtol_abs, maxeval,
           None if initial_step is None else np.asarray(initial_step, dtype=float).tobytes())
    cache = _BOBYQA.__dict__.setdefault("by_key", {})
    opt = cache.get(key)
    if opt is None:
        opt = nlopt.opt(nlopt.LN_BOBYQA, n)
        opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -float('inf')))
        opt.set_ftol_abs(ftol_abs)
        opt.set_xtol_abs(xtol_abs)
        opt.set_maxeval(maxeval)
        if initial_step is not None:
            opt.set_initial_step(initial_step)
        if len(cache) >= 16:  # a handful of model shapes per process: keep it bounded
            cache.clear()
        cache[key] = opt
    return opt


def _release(x, grad=None):  # what a cached optimiser holds between fits
    return 0.0


def _run_bobyqa(fun, x0, lower, ftol_abs, xtol_abs, maxeval, initial_step):
    import nlopt

    opt = _bobyqa(len(x0), lower, ftol_abs, xtol_abs, maxeval, initial_step)
    opt.set_min_objective(fun)  # called as fun(x, grad): ``recorded`` takes both
    try:
        x = opt.optimize(np.asarray(x0, dtype=float))
        code = opt.last_optimize_result()
    except nlopt.RoundoffLimited:  # no point returned: the best one seen is judged by the checks
        return True, "roundoff limited", None
    finally:
        opt.set_min_objective(_release)  # the model is not kept alive by the cache
    ok = code in (nlopt.SUCCESS, nlopt.FTOL_REACHED, nlopt.XTOL_REACHED)
    return ok, _NLOPT_STATUS.get(code, f"nlopt status {code}"), x


#: nlopt's result codes (nlopt.h), named as in the fit's message.
_NLOPT_STATUS = {1: "success", 2: "stopval reached", 3: "ftol reached", 4: "xtol reached",
                 5: "maximum number of evaluations reached", 6: "maximum time reached"}


def _run_cobyqa(fun, x0, lower, ftol_abs, xtol_abs, maxeval, initial_step):
    from scipy.optimize import Bounds, minimize

    bounds = Bounds(lower, np.full(len(x0), np.inf))
    res = minimize(fun, x0, method="COBYQA", bounds=bounds,
                   options={"maxfev": maxeval, "final_tr_radius": max(xtol_abs, 1e-10),
                            "initial_tr_radius": initial_step or 1.0})
    return bool(res.success), str(res.message), res.x


class _AtRounding(Exception):
    """Raised inside L-BFGS-B's objective when its next point cannot change f by more than
    f's rounding."""


def _run_lbfgs(fun_grad, x0, lower, ftol_abs, maxeval, first_step=None):
    """scipy's L-BFGS-B on (f, ∇f) = ``fun_grad(x)``, stopped when an iteration lowers f
    by less than ``ftol_abs`` (relative to f at the start, as scipy takes it; at least
    ``LBFGS_FTOL_FLOOR``), when the line search finds no lower point, or when the next
    point is within the checks' reuse distance of the lowest point x_b
    (``_within_stencil``) and its predicted change |∇f(x_b)'(x − x_b)| within f's
    rounding (``ROUNDING``): a line search shrinking its steps at the optimum would
    otherwise spend up to ``maxls`` evaluations on points f cannot tell apart (8-13 of
    them in 6 of 145 fits of 29 designs from perturbed starts).  In the last two cases
    the gradient is at its rounding level, which the checks judge.

    ``first_step``: ``(x0, ∇f(x0)) → length`` of the first trial step (scipy's is 1),
    taken by running L-BFGS-B on x/c, c that length rounded to a power of two (the
    scaling is then exact in floating point and changes nothing else: L-BFGS-B's later
    steps are invariant to a uniform scale)."""
    from scipy.optimize import minimize

    f0, g0 = fun_grad(x0)  # the scale of ftol; the caller keeps it for scipy's first call
    best = [np.array(x0, dtype=float), f0, g0]

    def guarded(x):
        x_best, f_best, g_best = best
        if (math.isfinite(f_best) and not np.array_equal(x, x_best)
                and _within_stencil(x, x_best)
                and abs(float(g_best @ (x - x_best))) <= ROUNDING * max(1.0, abs(f_best))):
            raise _AtRounding
        value, slope = fun_grad(x)
        if value < f_best:
            best[:] = np.array(x, dtype=float), value, slope
        return value, slope

    scale = 1.0
    if first_step is not None and math.isfinite(f0):
        length = float(first_step(x0, g0))
        if math.isfinite(length) and length > 0.0:
            scale = 2.0 ** round(math.log2(length))

    def scaled(xi):
        value, slope = guarded(xi * scale)
        return value, slope * scale

    bounds = [(bound / scale if math.isfinite(bound) else None, None)
              for bound in lower.tolist()]
    ftol = max(ftol_abs / max(1.0, abs(f0)), LBFGS_FTOL_FLOOR)
    try:
        res = minimize(scaled, x0 / scale, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxfun": maxeval, "ftol": ftol, "gtol": 0.0, "maxls": 40})
    except _AtRounding:
        return True, "the next step's change of f is within its rounding", best[0]
    stalled = "ABNORMAL" in str(res.message)  # no decrease left along the search direction
    return bool(res.success or stalled), str(res.message).lower(), res.x * scale


def minimize_bounded(fun, x0, lower, *, optimizer: str = "bobyqa", ftol_abs: float = 1e-8,
                     xtol_abs: float = 1e-8, maxeval: int = 100_000, initial_step=None,
                     check_gradient: bool = True, polish: bool = False,
                     gradient=None, gradients=None, curvature=None,
                     equivalents=None) -> OptSummary:
    """Minimise ``fun`` over x ≥ ``lower`` (entries of ``lower`` may be -inf).

    After the optimiser stops, entries within ``BOUNDARY_SNAP`` of a finite
    lower bound are moved onto it when the objective does not increase, and
    (``check_gradient``) the derivative checks of ``_derivative_checks`` run: the
    fit counts as converged when the optimiser reports success, no gradient
    component that could decrease the objective exceeds ``GRADIENT_TOL`` (after one
    restart from the point reached, if it did) and the Hessian has no negative
    eigenvalue; a zero eigenvalue marks the fit ``degenerate``.  Where the checks'
    quadratic model still promises more than ``RIDGE_DECREASE`` (a flat ridge) and the
    gradient is given, L-BFGS-B runs on from there, as it does for the restart.  With
    ``polish``, a converged fit then takes one Newton step with the checks' gradient
    and Hessian (``newton_polish``; one more evaluation), which the checks paid for: the
    optimiser's stopping rule leaves the estimates about 1e-4 (relative) from the
    optimum, enough to move a p value of a t test by 1e-6.  With ``gradient``, up to
    ``CHORD_STEPS`` chord steps follow (one evaluation each), so that the optimum does
    not depend on where the optimiser stopped.

    ``gradient`` (x → (fun(x), ∇fun(x)), exact) is required by ``optimizer="lbfgs"``;
    with it the checks take the gradient as it is and the Hessian from central
    differences of it over the interior coordinates (``_gradient_checks``: 2d
    evaluations instead of d(d + 1)); ``gradients`` (a list of points → their
    ``gradient`` values, e.g. on several threads) evaluates that stencil, by default
    one point after another.

    ``equivalents`` (x → [(x', k), …]) lists other points with the same value where x
    has coordinates on their bounds (``RandomEffectsLayout.column_flips``): where f falls
    inward along x'_k, the optimiser runs again from there.

    ``initial_step`` is BOBYQA's and COBYQA's initial trust-region radius and the length
    of L-BFGS-B's first trial step (the largest entry where given per coordinate).
    Without it, ``curvature`` (x → an estimate of the diagonal of ∇²fun at x) sets
    that length to the minimiser along −g of the quadratic model, ||g||³/Σ_i h_i g_i²;
    without either it is scipy's 1.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if optimizer == "lbfgs" and gradient is None:
        raise ValueError("optimizer 'lbfgs' needs the exact gradient")
    x0 = np.asarray(x0, dtype=float)
    lower = np.asarray(lower, dtype=float)
    summary = OptSummary(optimizer=optimizer, x_initial=x0.copy(),
                         tolerances={"ftol_abs": ftol_abs, "xtol_abs": xtol_abs,
                                     "maxeval": maxeval})
    log = summary.log

    def recorded(x, grad=None):  # nlopt passes an (empty) gradient too
        value = float(fun(x))
        log.append((x.copy(), value))
        return value

    seen = {}  # (f, ∇f) of the latest point and of the lowest, by the point's bytes: scipy
    #           asks for x0 twice, the checks for the optimiser's answer (the lowest) again

    def plain_with_gradient(x):
        x = np.asarray(x, dtype=float)
        key = x.tobytes()
        if key not in seen:
            lowest = min(seen.items(), key=lambda item: item[1][0], default=None)
            seen.clear()
            if lowest is not None:
                seen[lowest[0]] = lowest[1]
            seen[key] = _finite_or_inf(*gradient(x), len(x))
        return seen[key]

    def stencil_with_gradient(points):
        return [_finite_or_inf(value, slope, len(x0))
                for value, slope in gradients(points)]

    def recorded_with_gradient(x):
        value, slope = plain_with_gradient(x)
        if not (log and np.array_equal(log[-1][0], x)):
            log.append((np.array(x, dtype=float), value))
        return value, (slope if math.isfinite(value) else np.zeros(len(x)))

    first_step = None
    if initial_step is not None:
        first_step = lambda x, g: float(np.max(initial_step))  # noqa: E731
    elif curvature is not None:
        first_step = lambda x, g: _quadratic_model_step(curvature(x), g)  # noqa: E731

    start = time.perf_counter()
    if optimizer == "lbfgs":
        ok, message, x = _run_lbfgs(recorded_with_gradient, x0, lower, ftol_abs, maxeval,
                                    first_step)
        runner = None
    else:
        runner = _run_bobyqa if optimizer == "bobyqa" else _run_cobyqa
        ok, message, x = runner(recorded, x0, lower, ftol_abs, xtol_abs, maxeval, initial_step)
    summary.n_evaluations = len(log)
    summary.fun_initial = log[0][1] if log else math.nan
    if x is None:  # take the best point seen
        x = min(log, key=lambda item: item[1])[0]
    x = np.maximum(np.asarray(x, dtype=float), lower)
    best = _recorded_value(log, x)
    if best is None:
        best = fun(x)

    near = [bound < v < bound + BOUNDARY_SNAP for v, bound in zip(x.tolist(), lower.tolist())]
    if any(near):
        snapped = np.where(near, lower, x)
        value = fun(snapped)
        if value <= best:
            x, best = snapped, value

    def check(x, best):
        if gradient is not None:
            return _gradient_checks(plain_with_gradient, x, lower, best,
                                    many=stencil_with_gradient if gradients else None)
        return _derivative_checks(fun, x, lower, f0=best)

    def rerun(point, value, along_ridge=False):
        """(ok, message, x, f): the optimiser run again from ``point`` (f = ``value``),
        and the lower of its answer and the start.  ``along_ridge`` (with the gradient):
        L-BFGS-B stopped only at f's resolution (``LBFGS_FTOL_FLOOR``), its first step
        scipy's, since a curved valley's decrease comes in many small steps."""
        if along_ridge:
            ok, message, x_new = _run_lbfgs(recorded_with_gradient, point, lower, 0.0,
                                            maxeval)
        elif runner is None:
            ok, message, x_new = _run_lbfgs(recorded_with_gradient, point, lower, ftol_abs,
                                            maxeval, first_step)
        else:
            ok, message, x_new = runner(recorded, point, lower, ftol_abs, xtol_abs, maxeval,
                                        RESTART_STEP)
        summary.restarts += 1
        summary.n_evaluations = len(log)
        if x_new is None:
            return ok, message, point, value
        x_new = np.maximum(np.asarray(x_new, dtype=float), lower)
        new_value = _recorded_value(log, x_new)
        new_value = fun(x_new) if new_value is None else new_value
        return (ok, message, x_new, new_value) if new_value <= value else \
            (ok, message, point, value)

    for _ in range(2 if equivalents is not None else 0):
        # the same point in another representation, from which f may fall inward
        found = None
        for point, k in (equivalents(x) if math.isfinite(best) else ()):
            found = _inward(fun, point, lower, best, [k])
            if found is not None:
                break
        if found is None:
            break
        ok, message, x, best = rerun(*found)

    checks = check(x, best) if check_gradient else None
    grad_ok = checks is None or checks.max_gradient <= GRADIENT_TOL
    saddle = checks is not None and checks.negative > 0
    for _ in range(2 if optimizer == "lbfgs" else 0):
        if not (saddle and checks.escape and math.isfinite(best)):
            break
        # stopped on a bound that f falls away from: on from the best point inward
        restart = _inward(fun, x, lower, best, checks.escape)
        if restart is None:
            break
        ok, message, x, best = rerun(*restart)
        checks = check(x, best)
        grad_ok = checks.max_gradient <= GRADIENT_TOL
        saddle = checks.negative > 0
    if ok and (saddle or not grad_ok) and math.isfinite(best) and runner is not None:
        # Stopped on a flat ridge or where the curvature is negative: one restart, with a
        # small first step, from there or from the best point down the negative curvature.
        restart = (None if not saddle else _inward(fun, x, lower, best, checks.escape)
                   if checks.escape else _down_negative_curvature(fun, x, lower, best, checks))
        if restart is not None:
            x, best = restart
        ok, message, x, best = rerun(x, best, along_ridge=gradient is not None)
        checks = check(x, best)
        grad_ok = checks.max_gradient <= GRADIENT_TOL
    if (ok and gradient is not None and checks is not None and math.isfinite(best)
            and _expected_decrease(checks, x, lower) > RIDGE_DECREASE):
        # A flat ridge: the gradient passes its check while the quadratic model still
        # promises a decrease an evaluation shows (a slope variance that is almost a
        # second intercept trades with it along an arc to the bound).  Without the
        # gradient the polish's Newton step is what is affordable.
        ok, message, x, best = rerun(x, best, along_ridge=True)
        checks = check(x, best)
        grad_ok = checks.max_gradient <= GRADIENT_TOL
    notes = []
    hessian_ok = True
    if checks is not None:
        summary.max_gradient = checks.max_gradient
        summary.hessian_eigenvalues = checks.eigenvalues
        if not grad_ok:
            notes.append(f"scaled finite-difference gradient {checks.max_gradient:.3g} "
                         f"exceeds {GRADIENT_TOL:g}")
        if checks.negative:
            hessian_ok = False
            notes.append(f"degenerate Hessian with {checks.negative} negative "
                         f"eigenvalue(s): not a minimum")
        elif checks.zero:
            notes.append(SINGULAR_HESSIAN)
        summary.flat_directions = [v.copy() for v in checks.flat]
        summary.degenerate = bool(not checks.negative and checks.flat)
    summary.converged = bool(ok and math.isfinite(best) and grad_ok and hessian_ok)
    if polish and summary.converged and checks is not None:
        x, best = _newton_step(recorded, x, lower, best, checks,
                               recorded_with_gradient if gradient is not None else None)
        summary.n_evaluations = len(log)
    summary.message = "; ".join([message, *notes])
    summary.x_final = x
    summary.fun_final = best
    summary.seconds = time.perf_counter() - start
    return summary


def minimize_newton(fgh, x0, lower, *, maxiter: int = NEWTON_ITERATIONS) -> OptSummary:
    """Minimise f over x ≥ ``lower`` by Newton's method with exact Hessians in a trust
    region, compiled (``_dense.newton``); ``fgh`` is a compiled ``_dense.Objective``
    (a small model's profiled criterion) or a Python function x → (f, ∇f, ∇²f), None
    where f is not finite.

    Each step solves H_F s = −g_F over the free coordinates F (all but those on their
    bound with ∂f/∂x_k > 0) where H_F is positive definite; else H_F + μI with μ 1.5
    times its most negative eigenvalue's size (plus a small shift), and the step goes a
    radius's length down that eigenvector too (inward from bounds: at θ_k = 0 f is even
    in a scalar term's θ_k, so g_k = 0 there, at a maximum as at a minimum).  It is
    shortened to the trust region's radius (1 at the start) and projected onto the
    bounds; the radius doubles after a step that gained over three quarters of its
    predicted decrease at full length, and shrinks to a quarter of a step that rose.
    The run stops after the step at which the Newton decrement g_F'H_F⁻¹g_F/2 is within
    the objective's ``ROUNDING`` (that step taken where f does not rise past it: x then
    converges quadratically past f's resolution, and Satterthwaite's df move ten times
    as much as θ), or where a step no longer moves x.  The checks (``converged``,
    ``max_gradient``, eigenvalues, flat directions) are lme4's, from the exact gradient
    and Hessian at the answer (``_exact_checks``); ``converged`` is False where Newton's
    method did not stop at a point that passes them (a caller then uses BOBYQA).
    """
    x0 = np.asarray(x0, dtype=float)
    lower = np.asarray(lower, dtype=float)
    if not isinstance(fgh, _dense.Objective):
        fgh = _dense.PythonObjective(fgh, len(x0))
    start = time.perf_counter()
    x, f, g, H, stopped, log_x, log_f = _dense.newton(fgh, x0, lower, maxiter, ROUNDING)
    summary = OptSummary(optimizer="newton", x_initial=np.maximum(x0, lower),
                         tolerances={"maxiter": maxiter}, n_evaluations=len(log_f),
                         fun_initial=float(log_f[0]), x_final=x, fun_final=float(f))
    summary.log = list(zip(log_x, log_f.tolist()))
    if math.isfinite(f):
        checks = _exact_checks(x, f, g, H, lower)
        summary.max_gradient = checks.max_gradient
        summary.hessian_eigenvalues = checks.eigenvalues
        summary.flat_directions = [v.copy() for v in checks.flat]
        summary.degenerate = bool(not checks.negative and checks.flat)
        summary.converged = bool(stopped and not checks.negative
                                 and checks.max_gradient <= GRADIENT_TOL)
    summary.message = ("Newton's method converged" if summary.converged else
                       "Newton's method did not reach a point that passes the checks")
    if summary.converged and checks.zero:
        summary.message += "; " + SINGULAR_HESSIAN
    summary.seconds = time.perf_counter() - start
    return summary


def _exact_checks(x, f0: float, gradient, H, lower, rel_step: float = 1e-4) -> DerivativeChecks:
    """``_gradient_checks`` from the exact gradient and Hessian at x: the interior
    coordinates are the same (those a differencing step ``numdiff.step`` would not take
    past their bound), their Hessian is H's, and a coordinate on its bound with no
    derivative pushing it outward falls inward when ∂f/∂x_k one step in,
    g_k + h_k·H_kk, is negative with H_kk < −τ, and is flat there when |H_kk| ≤ τ."""
    d = len(x)
    h = [step(v, rel_step) for v in x.tolist()]
    idx = np.array([k for k in range(d) if x[k] - h[k] >= lower[k]], dtype=int)
    # the exact derivatives are good to about their own rounding
    tau_rounding = 10 * d * _EPS * max(1.0, abs(f0))
    checks = _judge(np.asarray(gradient, dtype=float), H[np.ix_(idx, idx)], idx, f0,
                    tau_rounding)
    _judge_bounds(checks, gradient, tau_rounding,
                  lambda k: (gradient[k] + h[k] * H[k, k], H[k, k]))
    return checks


def _judge_bounds(checks, gradient, tau_rounding: float, inward) -> None:
    """The checks of the coordinates on their bound (off ``checks.interior``), in place.
    On a bound the derivative of an even function of θ_k (a scalar term's) is 0, as at
    a minimum: a point there is one only if f rises inward.  Where ∂f/∂x_k does not push
    x_k outward (above ``tau_rounding``), ``inward(k)`` gives (∂f/∂x_k one step in, the
    curvature along x_k): f falls inward (a saddle: ``escape``) where the first is
    negative with the curvature below −``tau_rounding``, and is flat along x_k where the
    curvature is within ``checks.tau``."""
    d = len(gradient)
    for k in sorted(set(range(d)) - set(checks.interior.tolist())):
        if gradient[k] > tau_rounding:
            continue  # rising inward already
        slope, curvature = inward(k)
        if slope < 0 and curvature < -tau_rounding:
            checks.negative += 1
            checks.escape.append(k)
        elif abs(curvature) <= checks.tau:   # flat at the bound: any small value fits
            checks.flat.append(np.eye(d)[k])


def _quadratic_model_step(h, g) -> float:
    """Length of the step along −g to the minimum of f(x) + g'd + ½d'diag(h)d:
    ||g||³/Σ_i h_i g_i² (NaN where that is not positive and finite)."""
    g = np.asarray(g, dtype=float)
    curvature = float(np.sum(np.asarray(h, dtype=float) * g * g))
    return float(np.linalg.norm(g)) ** 3 / curvature if curvature > 0 else math.nan


def _finite_or_inf(value, slope, d: int):
    """(f, ∇f) as floats, or (inf, NaNs) where f is not finite or ∇f is missing."""
    value = float(value)
    if slope is None or not math.isfinite(value):
        return math.inf, np.full(d, np.nan)
    return value, np.asarray(slope, dtype=float)


def _gradient_checks(fun_grad, x, lower, f0: float, g0=None,
                     rel_step: float = 1e-4, many=None) -> DerivativeChecks:
    """``_derivative_checks`` from an exact gradient: ∇f(x) as it is (``g0`` if known),
    and the Hessian over the interior coordinates (those whose backward step stays
    within the bound) from central differences of the gradient, symmetrised:
    H[:, k] = (∇f(x + h_k e_k) − ∇f(x − h_k e_k)) / 2h_k, h_k as ``numdiff.step``
    (2d evaluations; forward differences would leave an error of h relative to the
    curvature, too much to tell a flat direction).  A coordinate on its bound costs one
    more evaluation when its derivative there is zero (see below).  ``many`` (points →
    their ``fun_grad``) evaluates the 2d points, by default one after another."""
    x = np.asarray(x, dtype=float)
    d = len(x)
    if g0 is None:
        _, g0 = fun_grad(x)
    h = [step(v, rel_step) for v in x.tolist()]
    idx = np.array([k for k in range(d) if x[k] - h[k] >= lower[k]], dtype=int)
    stencil = []
    for k in idx.tolist():
        for sign in (1.0, -1.0):
            point = x.copy()
            point[k] += sign * h[k]
            stencil.append(point)
    slopes = [g for _, g in (many(stencil) if many else map(fun_grad, stencil))]
    columns = [(slopes[2 * i] - slopes[2 * i + 1])[idx] / (2 * h[k])
               for i, k in enumerate(idx.tolist())]
    H = np.array(columns).reshape(len(idx), len(idx)).T if len(idx) else np.zeros((0, 0))
    H = 0.5 * (H + H.T)
    h_min = min((h[k] for k in idx.tolist()), default=1.0)
    # an exact gradient is good to about its own rounding, ε·max(1, |f|) per unit
    tau_rounding = 10 * d * _EPS * max(1.0, abs(f0)) / h_min
    checks = _judge(np.asarray(g0, dtype=float), H, idx, f0, tau_rounding)

    def one_step_in(k):  # differenced: the gradient one step inward
        z = x.copy()
        z[k] += h[k]
        g = fun_grad(z)[1]
        return g[k], (g[k] - g0[k]) / h[k]

    _judge_bounds(checks, g0, tau_rounding, one_step_in)
    return checks


def _within_stencil(x, checked, rel_step: float = 1e-4) -> bool:
    """Whether x is within ``REUSE_WITHIN`` differencing steps of ``checked`` in every
    coordinate (|x_k − c_k| ≤ ``REUSE_WITHIN``·h_k, a shift of at most 10⁻⁶ relative):
    where L-BFGS-B's next point is this near its lowest, a line search no longer moves f
    by more than its rounding."""
    return checked is not None and all(abs(a - c) <= REUSE_WITHIN * step(c, rel_step)
                                       for a, c in zip(x.tolist(), checked.tolist()))


def newton_polish(fun, x, lower, f0: float | None = None):
    """(x', fun(x')): one Newton step from x over its interior coordinates, with the
    gradient and Hessian of ``_derivative_checks``, taken when the Hessian is positive
    definite and the step (kept within the bounds) lowers ``fun``; else (x, fun(x)).

    An optimiser stopped by ``ftol_abs`` leaves a gradient of ~1e-4 (deviance units) at
    a smooth optimum; the step brings it to the finite differences' own error, for
    callers that start from x and judge their own optimum by its gradient.
    """
    x = np.asarray(x, dtype=float)
    f0 = float(fun(x)) if f0 is None else f0
    return _newton_step(fun, x, lower, f0, _derivative_checks(fun, x, lower, f0=f0))


def _newton_step(fun, x, lower, f0: float, checks, fun_grad=None):
    """``newton_polish`` with the derivatives ``checks`` already computed at x.  A step
    whose value is within the objective's ``ROUNDING`` of f0 is taken: its predicted
    decrease is then below what an evaluation can show, and the factor at hand is the
    step's (the caller's report at x would factor again).

    With ``fun_grad`` (x → (f, ∇f), exact), the step's point is evaluated with its
    gradient and up to ``CHORD_STEPS`` chord steps x − H⁻¹∇f(x) follow, H the checks'
    Hessian, each taken on the same rule, while the one before moved some coordinate by
    more than a thousandth of its differencing step (the chord converges linearly, at
    the rate H's change over the step).  A step that would take coordinates past their
    bounds puts them on the bounds and continues from there over the others, with the
    gradient evaluated there: a variance flat near zero is even in its θ, so the
    Hessian's coupling where the optimiser stopped (θ ≈ 1e-2) is not the coupling at 0,
    and one step clipped at the bound rose above where it started (1e-6 above lme4's
    deviance, the optimum on the bound).  Without ``fun_grad``, one step, the
    coordinates that would cross on their bounds and the rest solved for."""
    idx = checks.interior
    if not len(idx) or checks.negative or checks.zero \
            or not math.isfinite(checks.max_gradient):  # not finite, or H not definite
        return x, f0
    H, lower_i = checks.hessian, lower[idx]
    gradient = checks.gradient[idx]
    fixed = np.zeros(len(idx), dtype=bool)
    best, current = (x, f0), x
    for _ in range(2 + (CHORD_STEPS if fun_grad is not None else 0)):
        found = _bounded_newton(H, gradient, current[idx], lower_i, fixed)
        if found is None:
            break
        move, now_fixed = found
        trial = current.copy()
        if fun_grad is not None and (now_fixed & ~fixed).any():
            fixed = now_fixed   # onto the bounds first; the rest from there
            trial[idx[fixed]] = lower_i[fixed]
        else:
            trial[idx] += move
        if fun_grad is None:
            value, slope = float(fun(trial)), None
        else:
            value, slope = fun_grad(trial)
        if not np.isfinite(value):
            break
        moved = not all(abs(a - b) <= 1e-3 * step(b, 1e-4)
                        for a, b in zip(trial.tolist(), current.tolist()))
        current = trial
        if value <= best[1] + ROUNDING * max(1.0, abs(best[1])):
            best = (trial, float(value))
        elif not (fixed.any() and fun_grad is not None):
            break   # a step that rose: stop (on the bounds, the rest still to come)
        if slope is None or not moved or not np.all(np.isfinite(slope)):
            break
        gradient = np.asarray(slope, dtype=float)[idx]
    return best


def _expected_decrease(checks, x, lower) -> float:
    """f(x) − min of the checks' quadratic model of f over the interior coordinates,
    within the bounds (``_bounded_newton``): −(g'd + ½d'Hd) for its step d; 0 where the
    Hessian is not positive definite or a check is not finite."""
    idx = checks.interior
    if not len(idx) or checks.negative or not math.isfinite(checks.max_gradient):
        return 0.0
    g = checks.gradient[idx]
    found = _bounded_newton(checks.hessian, g, x[idx], lower[idx])
    if found is None:
        return 0.0
    d = found[0]
    return float(-(g @ d + 0.5 * d @ checks.hessian @ d))


def _bounded_newton(H, g, x, lower, fixed=None):
    """(d, fixed'): the Newton step d = −H⁻¹g for coordinates at x with ``fixed`` ones
    held on their bounds (the others solved for: H_ff d_f = −g_f − H_fb d_b), adding to
    them those that x + d would take past ``lower`` until none does; None where a
    system is not positive definite."""
    fixed = np.zeros(len(x), dtype=bool) if fixed is None else fixed.copy()
    while True:
        move = np.zeros(len(x))
        move[fixed] = lower[fixed] - x[fixed]
        free = ~fixed
        if free.any():
            rhs = -(g[free] + H[np.ix_(free, fixed)] @ move[fixed])
            try:
                factor = np.linalg.cholesky(H[np.ix_(free, free)])
            except np.linalg.LinAlgError:
                return None
            move[free] = solve_triangular(factor, solve_triangular(factor, rhs, lower=True),
                                          lower=True, trans=True)
        crossing = free & (x + move < lower)
        if not crossing.any():
            return np.maximum(x + move, lower) - x, fixed
        fixed |= crossing

def _recorded_value(log, x) -> float:
    """The recorded value of x when x is the lowest point evaluated (an optimiser's answer
    usually is: one evaluation fewer), else None."""
    point, value = min(log, key=lambda item: item[1]) if log else (None, None)
    return value if point is not None and np.array_equal(point, x) else None


def _inward(fun, x, lower, best, coordinates):
    """(point, value) of the lowest probe x + α·Σ_k e_k over the bound ``coordinates``
    (α = 10⁻³…1·max(1, |x|)) if it is below ``best``; else None."""
    direction = np.zeros(len(x))
    direction[coordinates] = 1.0
    reach = max(1.0, float(np.max(np.abs(x))))
    found = None
    for size in (1e-3, 1e-2, 1e-1, 1.0):
        trial = np.maximum(x + size * reach * direction, lower)
        value = float(fun(trial))
        if value < best:
            found, best = (trial, value), value
    return found


def _down_negative_curvature(fun, x, lower, best, checks):
    """(point, value) of the lowest probe x ± α·v (v the eigenvector of the most negative
    Hessian eigenvalue, α = 10⁻³…10⁻¹·max(1, |x|), clipped to the bounds) if it is
    below ``best``; else None."""
    H, idx = checks.hessian, checks.interior
    eigenvalues, vectors = np.linalg.eigh(H)
    direction = np.zeros(len(x))
    direction[idx] = vectors[:, int(np.argmin(eigenvalues))]
    reach = max(1.0, float(np.max(np.abs(x))))
    found = None
    for size in (1e-3, 1e-2, 1e-1):
        for sign in (1.0, -1.0):
            trial = np.maximum(x + sign * size * reach * direction, lower)
            value = float(fun(trial))
            if value < best:
                found, best = (trial, value), value
    return found


def _derivative_checks(fun, x, lower, rel_step: float = 1e-4,
                       f0: float | None = None) -> DerivativeChecks:
    """lme4's convergence checks at ``x`` from one set of d(d + 1) evaluations.

    Gradient and Hessian by ``numdiff.hessian``.  Coordinates whose backward step
    would cross their bound are on the boundary: their one-sided derivative counts
    only if it points inward (moving in would decrease ``fun``).  ``f0`` is ``fun(x)``
    where the caller has it (then it is not evaluated again).

    ``max_gradient`` is the largest gradient component as is when within
    ``GRADIENT_TOL``, else max |L⁻¹g| with H = LL' (lme4's check.conv.grad); τ, which
    separates negative and zero eigenvalues, is the larger of 1e-6·max|λ| and the
    rounding error of the differences, 10·d·ε·max(1, |f₀|)/min(h)².
    """
    x = np.asarray(x, dtype=float)
    d = len(x)
    f0 = float(fun(x)) if f0 is None else f0
    gradient, H, idx, h = hessian(fun, x, lower=lower, rel_step=rel_step, f0=f0)
    h_min = min((h[k] for k in idx.tolist()), default=1.0)
    return _judge(gradient, H, idx, f0, 10 * d * _EPS * max(1.0, abs(f0)) / h_min ** 2)


def _judge(gradient, H, idx, f0: float, tau_rounding: float) -> DerivativeChecks:
    """The checks from a gradient (all coordinates) and a Hessian over the interior
    ones ``idx``: on the boundary only a derivative pointing inward (moving in decreases
    f) counts; τ, which separates negative and zero eigenvalues, is the larger of
    1e-6·max|λ| and the differences' rounding error ``tau_rounding``."""
    d = len(gradient)
    interior = [False] * d
    for k in idx.tolist():
        interior[k] = True
    grad = [g if interior[k] else min(0.0, g) for k, g in enumerate(gradient.tolist())]
    gradient = np.array(grad)
    if not (all(map(math.isfinite, H.ravel().tolist())) and all(map(math.isfinite, grad))):
        return DerivativeChecks(math.inf, np.full(len(idx), np.nan), 0, 0, gradient, H, idx)
    if len(idx) <= 1:
        eigenvalues, vectors = H.diagonal().copy(), np.ones((len(idx), len(idx)))
    else:
        eigenvalues, vectors = np.linalg.eigh(H)
    values = eigenvalues.tolist()
    top = max(map(abs, values), default=0.0)
    tau = max(1e-6 * top, tau_rounding)
    checks = DerivativeChecks(math.nan, eigenvalues, sum(v < -tau for v in values),
                              sum(abs(v) <= tau for v in values), gradient, H, idx, tau=tau)
    for j, value in enumerate(values):
        if abs(value) <= tau:
            direction = np.zeros(d)
            direction[idx] = vectors[:, j]
            checks.flat.append(direction)
    raw = max(map(abs, grad), default=0.0)
    if raw <= GRADIENT_TOL:
        checks.max_gradient = raw
        return checks
    boundary = max((abs(grad[k]) for k in range(d) if not interior[k]), default=0.0)
    try:
        L = np.linalg.cholesky(H)
        scaled = float(np.max(np.abs(np.linalg.solve(L, gradient[idx])), initial=0.0))
    except np.linalg.LinAlgError:
        scaled = math.inf
    checks.max_gradient = max(boundary, scaled)
    return checks


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
    kkt: KKT | None = field(default=None, repr=False)
    second_order: ReducedHessian | None = field(default=None, repr=False)

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
