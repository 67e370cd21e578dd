"""Nonlinear model functions: R's self-starting models, and user functions.

Owns a model function's value, its gradient with respect to the model
parameters φ (analytic for the self-starting models, finite differences
otherwise), and start values from the data.

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
        """μ and, if asked, ∂μ/∂φ (n × s), checked for shape and finiteness."""
        try:
            mu = np.asarray(self.value(phi, cov), dtype=float)
        except Exception as exc:
            raise ModelFunctionError(f"model function {self.name!r} raised "
                                     f"{type(exc).__name__}: {exc}") from None
        n = phi.shape[0]
        if mu.shape != (n,):
            raise ModelFunctionError(f"model function {self.name!r} returned shape {mu.shape}; "
                                     f"expected ({n},), one value per observation")
        if not with_gradient:
            return mu, None
        if self.gradient is not None:
            grad = np.asarray(self.gradient(phi, cov), dtype=float)
            if grad.shape != phi.shape:
                raise ModelFunctionError(f"gradient of {self.name!r} returned shape {grad.shape}; "
                                         f"expected {phi.shape}")
        else:
            grad = self._finite_difference_gradient(phi, cov, mu)
        return mu, grad

    def _finite_difference_gradient(self, phi, cov, mu):
        """Central differences for all observations at once (``numdiff.rowwise_jacobian``),
        relative step ε^{1/3}, the optimum for central differences."""
        return rowwise_jacobian(lambda p: self.value(p, cov), phi, rel_step=6e-6)


# ---- the self-starting models ---------------------------------------------------

def _logis(phi, cov):
    asym, xmid, scal = phi.T
    (t,) = cov
    return asym / (1.0 + np.exp((xmid - t) / scal))


def _logis_grad(phi, cov):
    asym, xmid, scal = phi.T
    (t,) = cov
    e = np.exp((xmid - t) / scal)
    d = 1.0 / (1.0 + e)
    g_asym = d
    g_xmid = -asym * e * d**2 / scal
    g_scal = asym * e * d**2 * (xmid - t) / scal**2
    return np.column_stack([g_asym, g_xmid, g_scal])


def _logis_hessian(phi, cov):
    asym, xmid, scal = phi.T
    (t,) = cov
    w = (xmid - t) / scal
    e = np.exp(w)
    d = 1.0 / (1.0 + e)
    g = e * d**2                  # −∂d/∂w
    g1 = d**2 * (1.0 - 2.0 * e * d)  # ∂g/∂e
    H = np.zeros((len(t), 3, 3))
    H[:, 0, 1] = H[:, 1, 0] = -g / scal
    H[:, 0, 2] = H[:, 2, 0] = g * w / scal
    H[:, 1, 1] = -asym * e * g1 / scal**2
    H[:, 1, 2] = H[:, 2, 1] = asym * (e * g1 * w + g) / scal**2
    H[:, 2, 2] = -asym * (e * g1 * w**2 + 2.0 * g * w) / scal**2
    return H


def _logis_start(y, cov):
    (t,) = cov
    asym = 1.05 * np.max(y)
    z = np.clip(y / asym, 1e-3, 1 - 1e-3)
    slope, intercept = np.polyfit(t, np.log(z / (1 - z)), 1)  # logit(y/Asym) = (t − xmid)/scal
    scal = 1.0 / slope if slope != 0 else np.ptp(t) / 4
    return _refine(_logis, _logis_grad, y, cov, [asym, -intercept * scal, scal])


def _fol(phi, cov):
    lke, lka, lcl = phi.T
    dose, t = cov
    ke, ka = np.exp(lke), np.exp(lka)
    return dose * np.exp(lke + lka - lcl) * (np.exp(-ke * t) - np.exp(-ka * t)) / (ka - ke)


def _fol_parts(phi, cov):
    """t, the rates ke, ka, their decays e^{−ke t}, e^{−ka t}, and c = Dose·e^{lKe+lKa−lCl}."""
    lke, lka, lcl = phi.T
    dose, t = cov
    ke, ka = np.exp(lke), np.exp(lka)
    return t, ke, ka, np.exp(-ke * t), np.exp(-ka * t), dose * np.exp(lke + lka - lcl)


def _fol_grad(phi, cov):
    t, ke, ka, ek, ea, c = _fol_parts(phi, cov)
    diff = ka - ke
    mu = c * (ek - ea) / diff
    d_lke = mu + c * (-t * ke * ek) / diff + mu * ke / diff
    d_lka = mu + c * (t * ka * ea) / diff - mu * ka / diff
    d_lcl = -mu
    return np.column_stack([d_lke, d_lka, d_lcl])


def _fol_hessian(phi, cov):
    """μ = c·F·G with c = Dose·e^{lKe+lKa−lCl}, F = e^{−ke t} − e^{−ka t}, G = 1/(ka − ke);
    second derivatives by the product rule over (lKe, lKa), and ∂/∂lCl = −μ."""
    t, ke, ka, ek, ea, c = _fol_parts(phi, cov)
    D = ka - ke
    F = ek - ea
    G = 1.0 / D
    # first and second derivatives of the factors in x ∈ {0: lKe, 1: lKa}
    Fd = [-t * ke * ek, t * ka * ea]
    Fdd = {(0, 0): t * ke * ek * (t * ke - 1), (1, 1): t * ka * ea * (1 - t * ka),
           (0, 1): np.zeros_like(t)}
    Dd = [-ke, ka]
    Gd = [-Dd[0] * G**2, -Dd[1] * G**2]
    Gdd = {(0, 0): ke * G**2 + 2 * Dd[0] ** 2 * G**3, (1, 1): -ka * G**2 + 2 * Dd[1] ** 2 * G**3,
           (0, 1): 2 * Dd[0] * Dd[1] * G**3}
    mu = c * F * G
    H = np.empty((len(t), 3, 3))
    first = []
    for x in range(2):
        first.append(c * F * G + c * Fd[x] * G + c * F * Gd[x])
    for x in range(2):
        for y in range(x, 2):
            key = (x, y)
            value = (c * F * G + c * Fd[y] * G + c * F * Gd[y]    # ∂c/∂x = c, and so on
                     + c * Fd[x] * G + c * Fdd[key] * G + c * Fd[x] * Gd[y]
                     + c * F * Gd[x] + c * Fd[y] * Gd[x] + c * F * Gdd[key])
            H[:, x, y] = H[:, y, x] = value
    H[:, 0, 2] = H[:, 2, 0] = -first[0]
    H[:, 1, 2] = H[:, 2, 1] = -first[1]
    H[:, 2, 2] = mu
    return H


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


def _asymp(phi, cov):
    asym, r0, lrc = phi.T
    (t,) = cov
    return asym + (r0 - asym) * np.exp(-np.exp(lrc) * t)


def _asymp_grad(phi, cov):
    asym, r0, lrc = phi.T
    (t,) = cov
    rate = np.exp(lrc)
    e = np.exp(-rate * t)
    return np.column_stack([1 - e, e, -(r0 - asym) * e * rate * t])


def _asymp_hessian(phi, cov):
    asym, r0, lrc = phi.T
    (t,) = cov
    rate = np.exp(lrc)
    e = np.exp(-rate * t)
    H = np.zeros((len(t), 3, 3))
    H[:, 0, 2] = H[:, 2, 0] = e * rate * t
    H[:, 1, 2] = H[:, 2, 1] = -e * rate * t
    H[:, 2, 2] = -(r0 - asym) * e * rate * t * (1 - rate * t)
    return H


def _asymp_start(y, cov):
    (t,) = cov
    order = np.argsort(t)
    asym = y[order][-1] + 0.05 * np.ptp(y)
    r0 = y[order][0]
    z = np.clip((asym - y) / (asym - r0 if asym != r0 else 1.0), 1e-3, None)
    slope = np.polyfit(t, np.log(z), 1)[0]
    return _refine(_asymp, _asymp_grad, y, cov, [asym, r0, np.log(max(-slope, 1e-4))])


def _micmen(phi, cov):
    vm, k = phi.T
    (t,) = cov
    return vm * t / (k + t)


def _micmen_grad(phi, cov):
    vm, k = phi.T
    (t,) = cov
    return np.column_stack([t / (k + t), -vm * t / (k + t) ** 2])


def _micmen_hessian(phi, cov):
    vm, k = phi.T
    (t,) = cov
    H = np.zeros((len(t), 2, 2))
    H[:, 0, 1] = H[:, 1, 0] = -t / (k + t) ** 2
    H[:, 1, 1] = 2 * vm * t / (k + t) ** 3
    return H


def _micmen_start(y, cov):
    (t,) = cov
    pos = (t > 0) & (y > 0)
    slope, intercept = np.polyfit(1 / t[pos], 1 / y[pos], 1)  # Lineweaver–Burk
    vm = 1 / intercept if intercept > 0 else np.max(y)
    return _refine(_micmen, _micmen_grad, y, cov, [vm, max(slope * vm, 1e-6)])


def _biexp(phi, cov):
    a1, lrc1, a2, lrc2 = phi.T
    (t,) = cov
    return a1 * np.exp(-np.exp(lrc1) * t) + a2 * np.exp(-np.exp(lrc2) * t)


def _biexp_grad(phi, cov):
    a1, lrc1, a2, lrc2 = phi.T
    (t,) = cov
    r1, r2 = np.exp(lrc1), np.exp(lrc2)
    e1, e2 = np.exp(-r1 * t), np.exp(-r2 * t)
    return np.column_stack([e1, -a1 * e1 * r1 * t, e2, -a2 * e2 * r2 * t])


def _biexp_hessian(phi, cov):
    a1, lrc1, a2, lrc2 = phi.T
    (t,) = cov
    H = np.zeros((len(t), 4, 4))
    for a, lrc, i in ((a1, lrc1, 0), (a2, lrc2, 2)):
        rate = np.exp(lrc)
        e = np.exp(-rate * t)
        H[:, i, i + 1] = H[:, i + 1, i] = -e * rate * t
        H[:, i + 1, i + 1] = -a * e * rate * t * (1 - rate * t)
    return H


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


def _asympoff(phi, cov):
    asym, lrc, c0 = phi.T
    (t,) = cov
    return asym * (1.0 - np.exp(-np.exp(lrc) * (t - c0)))


def _asympoff_grad(phi, cov):
    asym, lrc, c0 = phi.T
    (t,) = cov
    rate = np.exp(lrc)
    e = np.exp(-rate * (t - c0))
    return np.column_stack([1.0 - e, asym * e * rate * (t - c0), -asym * e * rate])


def _asympoff_hessian(phi, cov):
    asym, lrc, c0 = phi.T
    (t,) = cov
    rate, s = np.exp(lrc), t - c0
    e = np.exp(-rate * s)
    H = np.zeros((len(t), 3, 3))
    H[:, 0, 1] = H[:, 1, 0] = e * rate * s
    H[:, 0, 2] = H[:, 2, 0] = -e * rate
    H[:, 1, 1] = asym * e * rate * s * (1 - rate * s)
    H[:, 1, 2] = H[:, 2, 1] = asym * e * rate * (rate * s - 1)
    H[:, 2, 2] = -asym * e * rate**2
    return H


def _asympoff_start(y, cov):
    # SSasymp's start, re-expressed: Asym + (R0 − Asym)e^{−rt} = Asym(1 − e^{−r(t − c0)})
    # with c0 = log((Asym − R0)/Asym)/r
    asym, r0, lrc = _asymp_start(y, cov)
    ratio = (asym - r0) / asym if asym != 0 else 1.0
    c0 = np.log(ratio) / np.exp(lrc) if ratio > 0 else 0.0
    return _refine(_asympoff, _asympoff_grad, y, cov, [asym, lrc, c0])


def _asymporig(phi, cov):
    asym, lrc = phi.T
    (t,) = cov
    return asym * (1.0 - np.exp(-np.exp(lrc) * t))


def _asymporig_grad(phi, cov):
    asym, lrc = phi.T
    (t,) = cov
    rate = np.exp(lrc)
    e = np.exp(-rate * t)
    return np.column_stack([1.0 - e, asym * e * rate * t])


def _asymporig_hessian(phi, cov):
    asym, lrc = phi.T
    (t,) = cov
    rate = np.exp(lrc)
    e = np.exp(-rate * t)
    H = np.zeros((len(t), 2, 2))
    H[:, 0, 1] = H[:, 1, 0] = e * rate * t
    H[:, 1, 1] = asym * e * rate * t * (1 - rate * t)
    return H


def _asymporig_start(y, cov):
    (t,) = cov
    asym = np.max(y) + 0.05 * np.ptp(y) if np.max(y) > 0 else np.min(y) - 0.05 * np.ptp(y)
    z = np.clip(1.0 - y / asym, 1e-3, None)       # log(1 − y/Asym) = −r t
    keep = t > 0
    slope = np.sum(t[keep] * np.log(z[keep])) / max(np.sum(t[keep] ** 2), 1e-300)
    return _refine(_asymporig, _asymporig_grad, y, cov, [asym, np.log(max(-slope, 1e-6))])


def _gompertz(phi, cov):
    asym, b2, b3 = phi.T
    (x,) = cov
    return asym * np.exp(-b2 * b3**x)


def _gompertz_grad(phi, cov):
    asym, b2, b3 = phi.T
    (x,) = cov
    power = b3**x
    g = np.exp(-b2 * power)
    return np.column_stack([g, -asym * g * power, -asym * g * b2 * x * power / b3])


def _gompertz_hessian(phi, cov):
    asym, b2, b3 = phi.T
    (x,) = cov
    power = b3**x
    g = np.exp(-b2 * power)
    q = x * power / b3                  # ∂(b3^x)/∂b3
    H = np.zeros((len(x), 3, 3))
    H[:, 0, 1] = H[:, 1, 0] = -g * power
    H[:, 0, 2] = H[:, 2, 0] = -g * b2 * q
    H[:, 1, 1] = asym * g * power**2
    H[:, 1, 2] = H[:, 2, 1] = asym * g * q * (b2 * power - 1)
    H[:, 2, 2] = asym * b2 * g * (b2 * q**2 - x * (x - 1) * power / b3**2)
    return H


def _gompertz_start(y, cov):
    (x,) = cov
    asym = 1.05 * np.max(y)
    z = np.clip(y / asym, 1e-6, 1 - 1e-6)         # log(−log(y/Asym)) = log b2 + x log b3
    slope, intercept = np.polyfit(x, np.log(-np.log(z)), 1)
    return _refine(_gompertz, _gompertz_grad, y, cov, [asym, np.exp(intercept), np.exp(slope)])


def _weibull(phi, cov):
    asym, drop, lrc, pwr = phi.T
    (x,) = cov
    return asym - drop * np.exp(-np.exp(lrc) * x**pwr)


def _weibull_parts(phi, cov):
    """x, Drop, the rate e^{lrc}, w = x^pwr, e^{−rate·w} and log x (0 at x = 0, where
    w·log x and w·log² x vanish)."""
    _, drop, lrc, pwr = phi.T
    (x,) = cov
    rate = np.exp(lrc)
    w = x**pwr
    return x, drop, rate, w, np.exp(-rate * w), np.log(np.where(x > 0, x, 1.0))


def _weibull_grad(phi, cov):
    x, drop, rate, w, e, log_x = _weibull_parts(phi, cov)
    core = drop * e * rate * w
    return np.column_stack([np.ones_like(x), -e, core, core * log_x])


def _weibull_hessian(phi, cov):
    x, drop, rate, w, e, log_x = _weibull_parts(phi, cov)
    core = e * rate * w
    H = np.zeros((len(x), 4, 4))
    H[:, 1, 2] = H[:, 2, 1] = core
    H[:, 1, 3] = H[:, 3, 1] = core * log_x
    H[:, 2, 2] = drop * core * (1 - rate * w)
    H[:, 2, 3] = H[:, 3, 2] = drop * core * log_x * (1 - rate * w)
    H[:, 3, 3] = drop * core * log_x**2 * (1 - rate * w)
    return H


def _weibull_start(y, cov):
    (x,) = cov
    asym = np.max(y) + 0.05 * np.ptp(y)
    drop = asym - np.min(y) + 0.05 * np.ptp(y)
    z = np.clip((asym - y) / drop, 1e-6, 1 - 1e-6)  # log(−log z) = lrc + pwr·log x
    keep = x > 0
    pwr, lrc = np.polyfit(np.log(x[keep]), np.log(-np.log(z[keep])), 1)
    return _refine(_weibull, _weibull_grad, y, cov, [asym, drop, lrc, pwr])


def _fpl(phi, cov):
    a, b, xmid, scal = phi.T
    (t,) = cov
    return a + (b - a) / (1.0 + np.exp((xmid - t) / scal))


def _fpl_grad(phi, cov):
    a, b, xmid, scal = phi.T
    (t,) = cov
    e = np.exp((xmid - t) / scal)
    d = 1.0 / (1.0 + e)
    g = (b - a) * e * d**2 / scal
    return np.column_stack([1.0 - d, d, -g, g * (xmid - t) / scal])


def _fpl_hessian(phi, cov):
    # μ = A + (B − A)·logistic(t; 1, xmid, scal): the logistic's Hessian with Asym = B − A
    a, b, xmid, scal = phi.T
    logistic = _logis_hessian(np.column_stack([b - a, xmid, scal]), cov)
    H = np.zeros((len(a), 4, 4))
    H[:, 2:, 2:] = logistic[:, 1:, 1:]
    H[:, 1, 2:] = H[:, 2:, 1] = logistic[:, 0, 1:]
    H[:, 0, 2:] = H[:, 2:, 0] = -logistic[:, 0, 1:]
    return H


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
