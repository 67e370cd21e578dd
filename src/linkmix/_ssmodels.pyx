# cython: language_level=3
"""Compiled values, gradients and Hessians of R's self-starting models.

Owns arithmetic only: ``linkmix.ssmodels`` gives the models their meaning (names,
covariates, self-starts) and documents each formula.  Every function takes φ
(n × s, C order) and the covariates as contiguous float arrays and returns a new
array: μ (n), ∂μ/∂φ (n × s) or ∂²μ/∂φ∂φ' (n × s × s).  One pass per observation
replaces a dozen numpy calls: PNLS evaluates a model a few times per iteration.
"""

import numpy as np
from libc.math cimport exp, log


def logis(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] / (1.0 + exp((phi[i, 1] - t[i]) / phi[i, 2]))
    return out


def logis_grad(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double asym, xmid, scal, e, d, g
    out = np.empty((n, 3))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            asym, xmid, scal = phi[i, 0], phi[i, 1], phi[i, 2]
            e = exp((xmid - t[i]) / scal)
            d = 1.0 / (1.0 + e)
            g = asym * e * d * d / scal
            o[i, 0] = d
            o[i, 1] = -g
            o[i, 2] = g * (xmid - t[i]) / scal
    return out


def logis_hessian(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double asym, xmid, scal, w, e, d, g, g1
    out = np.zeros((n, 3, 3))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            asym, xmid, scal = phi[i, 0], phi[i, 1], phi[i, 2]
            w = (xmid - t[i]) / scal
            e = exp(w)
            d = 1.0 / (1.0 + e)
            g = e * d * d
            g1 = d * d * (1.0 - 2.0 * e * d)
            H[i, 0, 1] = H[i, 1, 0] = -g / scal
            H[i, 0, 2] = H[i, 2, 0] = g * w / scal
            H[i, 1, 1] = -asym * e * g1 / (scal * scal)
            H[i, 1, 2] = H[i, 2, 1] = asym * (e * g1 * w + g) / (scal * scal)
            H[i, 2, 2] = -asym * (e * g1 * w * w + 2.0 * g * w) / (scal * scal)
    return out


def fol(const double[:, ::1] phi, const double[::1] dose, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double ke, ka
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            ke, ka = exp(phi[i, 0]), exp(phi[i, 1])
            o[i] = (dose[i] * exp(phi[i, 0] + phi[i, 1] - phi[i, 2])
                    * (exp(-ke * t[i]) - exp(-ka * t[i])) / (ka - ke))
    return out


def fol_grad(const double[:, ::1] phi, const double[::1] dose, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double ke, ka, ek, ea, c, diff, mu
    out = np.empty((n, 3))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            ke, ka = exp(phi[i, 0]), exp(phi[i, 1])
            ek, ea = exp(-ke * t[i]), exp(-ka * t[i])
            c = dose[i] * exp(phi[i, 0] + phi[i, 1] - phi[i, 2])
            diff = ka - ke
            mu = c * (ek - ea) / diff
            o[i, 0] = mu + c * (-t[i] * ke * ek) / diff + mu * ke / diff
            o[i, 1] = mu + c * (t[i] * ka * ea) / diff - mu * ka / diff
            o[i, 2] = -mu
    return out


def fol_hessian(const double[:, ::1] phi, const double[::1] dose, const double[::1] t):
    """μ = c·F·G, c = Dose·e^{lKe+lKa−lCl}, F = e^{−ke t} − e^{−ka t}, G = 1/(ka − ke):
    the product rule over (lKe, lKa) (∂c/∂x = c), and ∂/∂lCl = −μ."""
    cdef Py_ssize_t n = phi.shape[0], i
    cdef int x, y
    cdef double ke, ka, ek, ea, c, G, F, ti, mu
    cdef double Fd[2]
    cdef double Dd[2]
    cdef double Gd[2]
    cdef double first[2]
    cdef double Fdd[2][2]
    cdef double Gdd[2][2]
    out = np.empty((n, 3, 3))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            ti = t[i]
            ke, ka = exp(phi[i, 0]), exp(phi[i, 1])
            ek, ea = exp(-ke * ti), exp(-ka * ti)
            c = dose[i] * exp(phi[i, 0] + phi[i, 1] - phi[i, 2])
            G = 1.0 / (ka - ke)
            F = ek - ea
            Fd[0], Fd[1] = -ti * ke * ek, ti * ka * ea
            Fdd[0][0] = ti * ke * ek * (ti * ke - 1.0)
            Fdd[1][1] = ti * ka * ea * (1.0 - ti * ka)
            Fdd[0][1] = Fdd[1][0] = 0.0
            Dd[0], Dd[1] = -ke, ka
            Gd[0], Gd[1] = -Dd[0] * G * G, -Dd[1] * G * G
            Gdd[0][0] = ke * G * G + 2.0 * Dd[0] * Dd[0] * G * G * G
            Gdd[1][1] = -ka * G * G + 2.0 * Dd[1] * Dd[1] * G * G * G
            Gdd[0][1] = Gdd[1][0] = 2.0 * Dd[0] * Dd[1] * G * G * G
            mu = c * F * G
            for x in range(2):
                first[x] = c * F * G + c * Fd[x] * G + c * F * Gd[x]
            for x in range(2):
                for y in range(x, 2):
                    H[i, x, y] = (c * F * G + c * Fd[y] * G + c * F * Gd[y]
                                  + c * Fd[x] * G + c * Fdd[x][y] * G + c * Fd[x] * Gd[y]
                                  + c * F * Gd[x] + c * Fd[y] * Gd[x] + c * F * Gdd[x][y])
                    H[i, y, x] = H[i, x, y]
            H[i, 0, 2] = H[i, 2, 0] = -first[0]
            H[i, 1, 2] = H[i, 2, 1] = -first[1]
            H[i, 2, 2] = mu
    return out


def asymp(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] + (phi[i, 1] - phi[i, 0]) * exp(-exp(phi[i, 2]) * t[i])
    return out


def asymp_grad(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double rate, e
    out = np.empty((n, 3))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            rate = exp(phi[i, 2])
            e = exp(-rate * t[i])
            o[i, 0] = 1.0 - e
            o[i, 1] = e
            o[i, 2] = -(phi[i, 1] - phi[i, 0]) * e * rate * t[i]
    return out


def asymp_hessian(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double rate, e, q
    out = np.zeros((n, 3, 3))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            rate = exp(phi[i, 2])
            e = exp(-rate * t[i])
            q = e * rate * t[i]
            H[i, 0, 2] = H[i, 2, 0] = q
            H[i, 1, 2] = H[i, 2, 1] = -q
            H[i, 2, 2] = -(phi[i, 1] - phi[i, 0]) * q * (1.0 - rate * t[i])
    return out


def micmen(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] * t[i] / (phi[i, 1] + t[i])
    return out


def micmen_grad(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double s
    out = np.empty((n, 2))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            s = phi[i, 1] + t[i]
            o[i, 0] = t[i] / s
            o[i, 1] = -phi[i, 0] * t[i] / (s * s)
    return out


def micmen_hessian(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double s
    out = np.zeros((n, 2, 2))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            s = phi[i, 1] + t[i]
            H[i, 0, 1] = H[i, 1, 0] = -t[i] / (s * s)
            H[i, 1, 1] = 2.0 * phi[i, 0] * t[i] / (s * s * s)
    return out


def biexp(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = (phi[i, 0] * exp(-exp(phi[i, 1]) * t[i])
                    + phi[i, 2] * exp(-exp(phi[i, 3]) * t[i]))
    return out


def biexp_grad(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef int k
    cdef double rate, e
    out = np.empty((n, 4))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            for k in range(0, 4, 2):
                rate = exp(phi[i, k + 1])
                e = exp(-rate * t[i])
                o[i, k] = e
                o[i, k + 1] = -phi[i, k] * e * rate * t[i]
    return out


def biexp_hessian(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef int k
    cdef double rate, e
    out = np.zeros((n, 4, 4))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            for k in range(0, 4, 2):
                rate = exp(phi[i, k + 1])
                e = exp(-rate * t[i])
                H[i, k, k + 1] = H[i, k + 1, k] = -e * rate * t[i]
                H[i, k + 1, k + 1] = -phi[i, k] * e * rate * t[i] * (1.0 - rate * t[i])
    return out


def asympoff(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] * (1.0 - exp(-exp(phi[i, 1]) * (t[i] - phi[i, 2])))
    return out


def asympoff_grad(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double rate, s, e
    out = np.empty((n, 3))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            rate, s = exp(phi[i, 1]), t[i] - phi[i, 2]
            e = exp(-rate * s)
            o[i, 0] = 1.0 - e
            o[i, 1] = phi[i, 0] * e * rate * s
            o[i, 2] = -phi[i, 0] * e * rate
    return out


def asympoff_hessian(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double asym, rate, s, e
    out = np.zeros((n, 3, 3))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            asym, rate, s = phi[i, 0], exp(phi[i, 1]), t[i] - phi[i, 2]
            e = exp(-rate * s)
            H[i, 0, 1] = H[i, 1, 0] = e * rate * s
            H[i, 0, 2] = H[i, 2, 0] = -e * rate
            H[i, 1, 1] = asym * e * rate * s * (1.0 - rate * s)
            H[i, 1, 2] = H[i, 2, 1] = asym * e * rate * (rate * s - 1.0)
            H[i, 2, 2] = -asym * e * rate * rate
    return out


def asymporig(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] * (1.0 - exp(-exp(phi[i, 1]) * t[i]))
    return out


def asymporig_grad(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double rate, e
    out = np.empty((n, 2))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            rate = exp(phi[i, 1])
            e = exp(-rate * t[i])
            o[i, 0] = 1.0 - e
            o[i, 1] = phi[i, 0] * e * rate * t[i]
    return out


def asymporig_hessian(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double rate, e
    out = np.zeros((n, 2, 2))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            rate = exp(phi[i, 1])
            e = exp(-rate * t[i])
            H[i, 0, 1] = H[i, 1, 0] = e * rate * t[i]
            H[i, 1, 1] = phi[i, 0] * e * rate * t[i] * (1.0 - rate * t[i])
    return out


def gompertz(const double[:, ::1] phi, const double[::1] x):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] * exp(-phi[i, 1] * phi[i, 2] ** x[i])
    return out


def gompertz_grad(const double[:, ::1] phi, const double[::1] x):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double asym, b2, b3, power, g
    out = np.empty((n, 3))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            asym, b2, b3 = phi[i, 0], phi[i, 1], phi[i, 2]
            power = b3 ** x[i]
            g = exp(-b2 * power)
            o[i, 0] = g
            o[i, 1] = -asym * g * power
            o[i, 2] = -asym * g * b2 * x[i] * power / b3
    return out


def gompertz_hessian(const double[:, ::1] phi, const double[::1] x):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double asym, b2, b3, power, g, q, xi
    out = np.zeros((n, 3, 3))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            asym, b2, b3, xi = phi[i, 0], phi[i, 1], phi[i, 2], x[i]
            power = b3 ** xi
            g = exp(-b2 * power)
            q = xi * power / b3
            H[i, 0, 1] = H[i, 1, 0] = -g * power
            H[i, 0, 2] = H[i, 2, 0] = -g * b2 * q
            H[i, 1, 1] = asym * g * power * power
            H[i, 1, 2] = H[i, 2, 1] = asym * g * q * (b2 * power - 1.0)
            H[i, 2, 2] = asym * b2 * g * (b2 * q * q - xi * (xi - 1.0) * power / (b3 * b3))
    return out


def weibull(const double[:, ::1] phi, const double[::1] x):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] - phi[i, 1] * exp(-exp(phi[i, 2]) * x[i] ** phi[i, 3])
    return out


cdef inline double _log_or_zero(double x) nogil:
    # w·log x and w·log² x vanish as x → 0 (w = x^pwr)
    return log(x) if x > 0 else 0.0


def weibull_grad(const double[:, ::1] phi, const double[::1] x):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double rate, w, e, core
    out = np.empty((n, 4))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            rate = exp(phi[i, 2])
            w = x[i] ** phi[i, 3]
            e = exp(-rate * w)
            core = phi[i, 1] * e * rate * w
            o[i, 0] = 1.0
            o[i, 1] = -e
            o[i, 2] = core
            o[i, 3] = core * _log_or_zero(x[i])
    return out


def weibull_hessian(const double[:, ::1] phi, const double[::1] x):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double drop, rate, w, e, core, lx, bend
    out = np.zeros((n, 4, 4))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            drop, rate = phi[i, 1], exp(phi[i, 2])
            w = x[i] ** phi[i, 3]
            e = exp(-rate * w)
            core = e * rate * w
            lx = _log_or_zero(x[i])
            bend = 1.0 - rate * w
            H[i, 1, 2] = H[i, 2, 1] = core
            H[i, 1, 3] = H[i, 3, 1] = core * lx
            H[i, 2, 2] = drop * core * bend
            H[i, 2, 3] = H[i, 3, 2] = drop * core * lx * bend
            H[i, 3, 3] = drop * core * lx * lx * bend
    return out


def fpl(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = phi[i, 0] + (phi[i, 1] - phi[i, 0]) / (1.0 + exp((phi[i, 2] - t[i]) / phi[i, 3]))
    return out


def fpl_grad(const double[:, ::1] phi, const double[::1] t):
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double e, d, g, scal
    out = np.empty((n, 4))
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            scal = phi[i, 3]
            e = exp((phi[i, 2] - t[i]) / scal)
            d = 1.0 / (1.0 + e)
            g = (phi[i, 1] - phi[i, 0]) * e * d * d / scal
            o[i, 0] = 1.0 - d
            o[i, 1] = d
            o[i, 2] = -g
            o[i, 3] = g * (phi[i, 2] - t[i]) / scal
    return out


def fpl_hessian(const double[:, ::1] phi, const double[::1] t):
    """SSlogis's Hessian with Asym = B − A: ∂/∂B of its Asym row, −∂/∂A of it."""
    cdef Py_ssize_t n = phi.shape[0], i
    cdef double amp, scal, w, e, d, g, g1, hx, hs
    out = np.zeros((n, 4, 4))
    cdef double[:, :, ::1] H = out
    with nogil:
        for i in range(n):
            amp, scal = phi[i, 1] - phi[i, 0], phi[i, 3]
            w = (phi[i, 2] - t[i]) / scal
            e = exp(w)
            d = 1.0 / (1.0 + e)
            g = e * d * d
            g1 = d * d * (1.0 - 2.0 * e * d)
            hx, hs = -g / scal, g * w / scal        # ∂²/∂Asym∂xmid, ∂²/∂Asym∂scal
            H[i, 1, 2] = H[i, 2, 1] = hx
            H[i, 1, 3] = H[i, 3, 1] = hs
            H[i, 0, 2] = H[i, 2, 0] = -hx
            H[i, 0, 3] = H[i, 3, 0] = -hs
            H[i, 2, 2] = -amp * e * g1 / (scal * scal)
            H[i, 2, 3] = H[i, 3, 2] = amp * (e * g1 * w + g) / (scal * scal)
            H[i, 3, 3] = -amp * (e * g1 * w * w + 2.0 * g * w) / (scal * scal)
    return out
