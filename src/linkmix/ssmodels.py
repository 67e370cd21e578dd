"""Nonlinear model functions: R's self-starting models, and user functions.

Owns a model function's value, its gradient with respect to the model
parameters φ (analytic for the self-starting models, finite differences
otherwise), and start values from the data.  The self-starting models' values,
gradients and Hessians are compiled (``linkmix._ssmodels``): PNLS evaluates them a
few times per iteration, and one pass per observation replaces a dozen numpy calls.

A model maps ``phi`` (n × s, one row of model parameters per observation) and
its covariates (a tuple of n-vectors) to the mean μ (n).  The self-starting
models, with R's argument order (covariates first, then parameters):

* ``SSlogis(input, Asym, xmid, scal)``: Asym / (1 + exp((xmid − t)/scal))
* ``SSfol(Dose, input, lKe, lKa, lCl)``:
  Dose·e^{lKe+lKa−lCl}·(e^{−e^{lKe}t} − e^{−e^{lKa}t}) / (e^{lKa} − e^{lKe})
* ``SSasymp(input, Asym, R0, lrc)``: Asym + (R0 − Asym)·exp(−e^{lrc}·t)
* ``SSmicmen(input, Vm, K)``: Vm·t / (K + t)
* ``SSbiexp(input, A1, lrc1, A2, lrc2)``: A1·e^{−e^{lrc1}t} + A2·e^{−e^{lrc2}t}
* ``SSasympOff(input, Asym, lrc, c0)``: Asym·(1 − exp(−e^{lrc}·(t − c0)))
* ``SSasympOrig(input, Asym, lrc)``: Asym·(1 − exp(−e^{lrc}·t))
* ``SSgompertz(x, Asym, b2, b3)``: Asym·exp(−b2·b3^x)
* ``SSweibull(x, Asym, Drop, lrc, pwr)``: Asym − Drop·exp(−e^{lrc}·x^pwr)
* ``SSfpl(input, A, B, xmid, scal)``: A + (B − A)/(1 + exp((xmid − t)/scal))

Self-starts follow R's idea: a linearising transform of the pooled data gives rough
values, which pooled nonlinear least squares then refines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _ssmodels as _kernels
from .errors import LinkmixError
from .numdiff import rowwise_jacobian

__all__ = ["NonlinearFunction", "SELF_STARTING", "user_model", "ModelFunctionError"]


class ModelFunctionError(LinkmixError):
    """A nonlinear model function failed, returned NaN, or returned the wrong shape."""


@dataclass(frozen=True)
class NonlinearFunction:
    """A vectorised model function μ = m(φ; covariates) and its gradient ∂μ/∂φ.

    Attributes
    ----------
    name : str
    covariates : tuple of str
        Names of the covariate arguments (``("input",)``, ``("Dose", "input")``).
    params : tuple of str
        Default names of the model parameters, in order.
    value : callable(phi, cov) -> ndarray (n,)
    gradient : callable(phi, cov) -> ndarray (n, s), optional
        Analytic ∂μ/∂φ; finite differences when absent.
    start : callable(y, cov) -> ndarray (s,), optional
        Start values for the parameters from pooled data.
    hessian : callable(phi, cov) -> ndarray (n, s, s), optional
        Analytic ∂²μ/∂φ∂φ' (used by Newton steps in PNLS); differences of the
        gradient when absent.
    """

    name: str
    covariates: tuple
    params: tuple
    value: object
    gradient: object = None
    start: object = None
    hessian: object = None

    def evaluate(self, phi, cov, with_gradient: bool = True):
        """μ and, if asked, ∂μ/∂φ (n × s), checked for shape."""
        mu = self._checked_value(phi, cov)
        return mu, (self._checked_gradient(phi, cov) if with_gradient else None)

    def _checked_value(self, phi, cov) -> np.ndarray:
        try:
            mu = np.asarray(self.value(phi, cov), dtype=float)
        except Exception as exc:
            raise ModelFunctionError(f"model function {self.name!r} raised "
                                     f"{type(exc).__name__}: {exc}") from None
        n = phi.shape[0]
        if mu.shape != (n,):
            raise ModelFunctionError(f"model function {self.name!r} returned shape {mu.shape}; "
                                     f"expected ({n},), one value per observation")
        return mu

    def _checked_gradient(self, phi, cov) -> np.ndarray:
        if self.gradient is None:  # central differences, all observations at once
            return rowwise_jacobian(lambda p: self.value(p, cov), phi, rel_step=6e-6)
        try:
            grad = np.asarray(self.gradient(phi, cov), dtype=float)
        except Exception as exc:
            raise ModelFunctionError(f"gradient of {self.name!r} raised "
                                     f"{type(exc).__name__}: {exc}") from None
        if grad.shape != phi.shape:
            raise ModelFunctionError(f"gradient of {self.name!r} returned shape {grad.shape}; "
                                     f"expected {phi.shape}")
        return grad

    def bound(self, cov) -> tuple:
        """(value, gradient, hessian) as functions of φ alone at these covariates, each
        returning a new C-contiguous float64 array, for PNLS's inner loop
        (``linkmix._pnls``): the compiled kernels called directly (the covariates are
        checked once, here; PNLS checks what they return), the checked forms
        otherwise.  ``hessian`` is None where the model has none."""
        if all(isinstance(f, _Kernel) for f in (self.value, self.gradient, self.hessian)):
            return tuple(f.bind(cov) for f in (self.value, self.gradient, self.hessian))

        def value(phi):
            return np.array(self._checked_value(phi, cov), dtype=float, order="C")

        def gradient(phi):
            return np.array(self._checked_gradient(phi, cov), dtype=float, order="C")

        hessian = None
        if self.hessian is not None:
            def hessian(phi):
                return np.array(self.hessian(phi, cov), dtype=float, order="C")
        return value, gradient, hessian


# ---- the self-starting models ---------------------------------------------------

class _Kernel:
    """A model function ``(phi, cov) → array`` over a compiled kernel of
    ``linkmix._ssmodels``, which reads φ's columns and the covariates unchecked: the
    shapes are checked here."""

    def __init__(self, kernel, n_params: int, n_covariates: int = 1):
        self.kernel, self.n_params, self.n_covariates = kernel, n_params, n_covariates
        self.__name__ = kernel.__name__

    def _columns(self, cov, n: int) -> list[np.ndarray]:
        if len(cov) != self.n_covariates:
            raise ValueError(f"{self.__name__} takes {self.n_covariates} covariate(s), "
                             f"not {len(cov)}")
        columns = [np.ascontiguousarray(c, dtype=float) for c in cov]
        if any(c.shape != (n,) for c in columns):
            raise ValueError(f"{self.__name__}: each covariate needs one value per row of φ")
        return columns

    def __call__(self, phi, cov):
        phi = np.ascontiguousarray(phi, dtype=float)
        if phi.ndim != 2 or phi.shape[1] != self.n_params:
            raise ValueError(f"{self.__name__} takes φ with {self.n_params} columns; got φ "
                             f"of shape {phi.shape}")
        return self.kernel(phi, *self._columns(cov, phi.shape[0]))

    def bind(self, cov):
        """The kernel at fixed covariates: φ (n × s, C-contiguous float64, as PNLS's
        buffers are) → array, with no per-call checks."""
        kernel, columns = self.kernel, self._columns(cov, len(cov[0]) if cov else 0)
        return lambda phi: kernel(phi, *columns)


_logis, _logis_grad, _logis_hessian = (
    _Kernel(k, 3) for k in (_kernels.logis, _kernels.logis_grad, _kernels.logis_hessian))
_fol, _fol_grad, _fol_hessian = (
    _Kernel(k, 3, 2) for k in (_kernels.fol, _kernels.fol_grad, _kernels.fol_hessian))
_asymp, _asymp_grad, _asymp_hessian = (
    _Kernel(k, 3) for k in (_kernels.asymp, _kernels.asymp_grad, _kernels.asymp_hessian))
_micmen, _micmen_grad, _micmen_hessian = (
    _Kernel(k, 2) for k in (_kernels.micmen, _kernels.micmen_grad, _kernels.micmen_hessian))
_biexp, _biexp_grad, _biexp_hessian = (
    _Kernel(k, 4) for k in (_kernels.biexp, _kernels.biexp_grad, _kernels.biexp_hessian))
_asympoff, _asympoff_grad, _asympoff_hessian = (
    _Kernel(k, 3) for k in (_kernels.asympoff, _kernels.asympoff_grad,
                              _kernels.asympoff_hessian))
_asymporig, _asymporig_grad, _asymporig_hessian = (
    _Kernel(k, 2) for k in (_kernels.asymporig, _kernels.asymporig_grad,
                              _kernels.asymporig_hessian))
_gompertz, _gompertz_grad, _gompertz_hessian = (
    _Kernel(k, 3) for k in (_kernels.gompertz, _kernels.gompertz_grad,
                              _kernels.gompertz_hessian))
_weibull, _weibull_grad, _weibull_hessian = (
    _Kernel(k, 4) for k in (_kernels.weibull, _kernels.weibull_grad, _kernels.weibull_hessian))
_fpl, _fpl_grad, _fpl_hessian = (
    _Kernel(k, 4) for k in (_kernels.fpl, _kernels.fpl_grad, _kernels.fpl_hessian))


def _logis_start(y, cov):
    (t,) = cov
    asym = 1.05 * np.max(y)
    z = np.clip(y / asym, 1e-3, 1 - 1e-3)
    slope, intercept = np.polyfit(t, np.log(z / (1 - z)), 1)  # logit(y/Asym) = (t − xmid)/scal
    scal = 1.0 / slope if slope != 0 else np.ptp(t) / 4
    return _refine(_logis, _logis_grad, y, cov, [asym, -intercept * scal, scal])


def _fol_start(y, cov):
    dose, t = cov
    # elimination rate from the log-linear tail, absorption a few times faster, and
    # clearance Dose/AUC (∫μ dt = Dose·e^{−lCl}) from the pooled, time-sorted curve
    late = (t >= np.quantile(t, 0.6)) & (y > 0)
    ke = -np.polyfit(t[late], np.log(y[late]), 1)[0] if late.sum() > 2 else 0.1
    ke = max(ke, 1e-3)
    order = np.argsort(t)
    ts, ys = t[order], y[order]
    auc = np.sum(np.diff(ts) * (ys[1:] + ys[:-1]) / 2) + max(ys[-1], 0) / ke
    cl = np.mean(dose) / max(auc, 1e-12)
    return _refine(_fol, _fol_grad, y, cov, [np.log(ke), np.log(3 * ke + 0.5), np.log(cl)])


def _asymp_start(y, cov):
    (t,) = cov
    order = np.argsort(t)
    asym = y[order][-1] + 0.05 * np.ptp(y)
    r0 = y[order][0]
    z = np.clip((asym - y) / (asym - r0 if asym != r0 else 1.0), 1e-3, None)
    slope = np.polyfit(t, np.log(z), 1)[0]
    return _refine(_asymp, _asymp_grad, y, cov, [asym, r0, np.log(max(-slope, 1e-4))])


def _micmen_start(y, cov):
    (t,) = cov
    pos = (t > 0) & (y > 0)
    slope, intercept = np.polyfit(1 / t[pos], 1 / y[pos], 1)  # Lineweaver–Burk
    vm = 1 / intercept if intercept > 0 else np.max(y)
    return _refine(_micmen, _micmen_grad, y, cov, [vm, max(slope * vm, 1e-6)])


def _biexp_start(y, cov):
    (t,) = cov
    order = np.argsort(t)
    half = len(t) // 2
    late = order[half:]
    pos = y[late] > 0
    s2, i2 = np.polyfit(t[late][pos], np.log(y[late][pos]), 1) if pos.sum() > 1 else (-0.1, 0.0)
    resid = y - np.exp(i2 + s2 * t)
    early = order[:half]
    pos = resid[early] > 0
    s1, i1 = np.polyfit(t[early][pos], np.log(resid[early][pos]), 1) if pos.sum() > 1 \
        else (4 * s2, i2)
    start = [np.exp(i1), np.log(max(-s1, 1e-4)), np.exp(i2), np.log(max(-s2, 1e-5))]
    return _refine(_biexp, _biexp_grad, y, cov, start)


def _asympoff_start(y, cov):
    # SSasymp's start, re-expressed: Asym + (R0 − Asym)e^{−rt} = Asym(1 − e^{−r(t − c0)})
    # with c0 = log((Asym − R0)/Asym)/r
    asym, r0, lrc = _asymp_start(y, cov)
    ratio = (asym - r0) / asym if asym != 0 else 1.0
    c0 = np.log(ratio) / np.exp(lrc) if ratio > 0 else 0.0
    return _refine(_asympoff, _asympoff_grad, y, cov, [asym, lrc, c0])


def _asymporig_start(y, cov):
    (t,) = cov
    asym = np.max(y) + 0.05 * np.ptp(y) if np.max(y) > 0 else np.min(y) - 0.05 * np.ptp(y)
    z = np.clip(1.0 - y / asym, 1e-3, None)       # log(1 − y/Asym) = −r t
    keep = t > 0
    slope = np.sum(t[keep] * np.log(z[keep])) / max(np.sum(t[keep] ** 2), 1e-300)
    return _refine(_asymporig, _asymporig_grad, y, cov, [asym, np.log(max(-slope, 1e-6))])


def _gompertz_start(y, cov):
    (x,) = cov
    asym = 1.05 * np.max(y)
    z = np.clip(y / asym, 1e-6, 1 - 1e-6)         # log(−log(y/Asym)) = log b2 + x log b3
    slope, intercept = np.polyfit(x, np.log(-np.log(z)), 1)
    return _refine(_gompertz, _gompertz_grad, y, cov, [asym, np.exp(intercept), np.exp(slope)])


def _weibull_start(y, cov):
    (x,) = cov
    asym = np.max(y) + 0.05 * np.ptp(y)
    drop = asym - np.min(y) + 0.05 * np.ptp(y)
    z = np.clip((asym - y) / drop, 1e-6, 1 - 1e-6)  # log(−log z) = lrc + pwr·log x
    keep = x > 0
    pwr, lrc = np.polyfit(np.log(x[keep]), np.log(-np.log(z[keep])), 1)
    return _refine(_weibull, _weibull_grad, y, cov, [asym, drop, lrc, pwr])


def _fpl_start(y, cov):
    (t,) = cov
    pad = 0.05 * np.ptp(y)
    a, b = np.min(y) - pad, np.max(y) + pad
    z = np.clip((y - a) / (b - a), 1e-3, 1 - 1e-3)  # logit z = (t − xmid)/scal
    slope, intercept = np.polyfit(t, np.log(z / (1 - z)), 1)
    scal = 1.0 / slope if slope != 0 else np.ptp(t) / 4
    return _refine(_fpl, _fpl_grad, y, cov, [a, b, -intercept * scal, scal])


def _refine(value, gradient, y, cov, start):
    """Pooled nonlinear least squares from a heuristic start (R's self-start does an nls)."""
    import scipy.optimize  # on first use, as in linkmix.optimize: it takes ~0.2 s to import

    start = np.asarray(start, dtype=float)

    def resid(p):
        return value(np.broadcast_to(p, (len(y), len(p))), cov) - y

    def jac(p):
        return gradient(np.broadcast_to(p, (len(y), len(p))).copy(), cov)

    try:
        fit = scipy.optimize.least_squares(resid, start, jac=jac, method="lm")
        if fit.success and np.all(np.isfinite(fit.x)):
            return fit.x
    except (ValueError, FloatingPointError):
        pass
    return start


SELF_STARTING = {
    "SSlogis": NonlinearFunction("SSlogis", ("input",), ("Asym", "xmid", "scal"), _logis,
                                 _logis_grad, _logis_start, _logis_hessian),
    "SSfol": NonlinearFunction("SSfol", ("Dose", "input"), ("lKe", "lKa", "lCl"), _fol,
                               _fol_grad, _fol_start, _fol_hessian),
    "SSasymp": NonlinearFunction("SSasymp", ("input",), ("Asym", "R0", "lrc"), _asymp,
                                 _asymp_grad, _asymp_start, _asymp_hessian),
    "SSmicmen": NonlinearFunction("SSmicmen", ("input",), ("Vm", "K"), _micmen, _micmen_grad,
                                  _micmen_start, _micmen_hessian),
    "SSbiexp": NonlinearFunction("SSbiexp", ("input",), ("A1", "lrc1", "A2", "lrc2"), _biexp,
                                 _biexp_grad, _biexp_start, _biexp_hessian),
    "SSasympOff": NonlinearFunction("SSasympOff", ("input",), ("Asym", "lrc", "c0"), _asympoff,
                                    _asympoff_grad, _asympoff_start, _asympoff_hessian),
    "SSasympOrig": NonlinearFunction("SSasympOrig", ("input",), ("Asym", "lrc"), _asymporig,
                                     _asymporig_grad, _asymporig_start, _asymporig_hessian),
    "SSgompertz": NonlinearFunction("SSgompertz", ("x",), ("Asym", "b2", "b3"), _gompertz,
                                    _gompertz_grad, _gompertz_start, _gompertz_hessian),
    "SSweibull": NonlinearFunction("SSweibull", ("x",), ("Asym", "Drop", "lrc", "pwr"), _weibull,
                                   _weibull_grad, _weibull_start, _weibull_hessian),
    "SSfpl": NonlinearFunction("SSfpl", ("input",), ("A", "B", "xmid", "scal"), _fpl, _fpl_grad,
                               _fpl_start, _fpl_hessian),
}


def user_model(fun, params, covariates=(), jacobian=None, name=None) -> NonlinearFunction:
    """Wrap a user function ``fun(phi, data)`` as a ``NonlinearFunction``.

    ``phi`` is passed as a dict of parameter name → n-vector; ``data`` is the tuple
    of covariate columns named in ``covariates`` (as a dict by name).  ``jacobian``,
    if given, returns ∂μ/∂φ as an (n × s) array in ``params`` order.
    """
    params = tuple(params)
    covariates = tuple(covariates)

    def value(phi, cov):
        return fun(dict(zip(params, phi.T)), dict(zip(covariates, cov)))

    gradient = None
    if jacobian is not None:
        def gradient(phi, cov):
            return jacobian(dict(zip(params, phi.T)), dict(zip(covariates, cov)))

    return NonlinearFunction(name or getattr(fun, "__name__", "model"), covariates, params,
                             value, gradient, None)
