# cython: language_level=3
"""Compiled penalised nonlinear least squares (PNLS) of a nonlinear mixed model.

Owns arithmetic only (``linkmix.nonlinear`` gives it meaning).  At fixed θ and Xβ,
the conditional modes ũ = argmin_u ‖y − μ(u)‖² + ‖u‖², μ = m(Xβ + Λ_θu), by Newton
steps (Gauss–Newton where the curvature is unavailable or not positive definite)
with step halving, and log|L|² of LL' = U'U + I at ũ for the Laplace deviance.

An iteration runs here end to end: b = Λu, each observation's model parameters φ,
the working response, the Newton system's per-observation terms, its sums and
blocked factorisation (``linkmix._pls.BlockedSystem``, refilled in place: nothing is
allocated per iteration), the back-substitution and the step.  The calls out are
the model function (value, gradient, Hessian at φ: compiled kernels for the
self-starting models, the user's Python for theirs) and, for an engine without a
compiled system (CHOLMOD), the engine's own solve.

Layout: observation i has K random-effect *slots*, every term's coefficients in θ's
order; slot s holds b[slot_index[i, s]] and shifts model parameter φ[i, slots[s]]
(two terms on one parameter add).  The first term's k1 slots are the blocked
system's term 1, the rest its later-term slots, in order.
"""

from libc.math cimport INFINITY, NAN, fabs, isfinite
from libc.stdint cimport int64_t

import numpy as np

from linkmix._pls cimport BlockedSystem, _fill_lambda_blocks


cdef bint _finite(const double* x, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        if not isfinite(x[i]):
            return False
    return True


cdef class PNLS:
    """The PNLS problem of one model: its data, layout and work space, bound once.

    Parameters
    ----------
    y : ndarray (n,)
    slot_index : int64 ndarray (n × K)
        Where each observation's slot values are in b.
    slots : int64 ndarray (K,)
        The model parameter (column of φ) each slot shifts.
    n_params : int
        Columns of φ.
    tmpl, tmpl_off, term_k : int32 ndarrays
        θ's template of the terms' factors T (``design.theta_template()``).
    term_levels : int32 ndarray
        Levels of each term (b's layout: term by term, level by level, k each).
    system : BlockedSystem or None
        The blocked engine's compiled system.  None: ``engine_step(grad, working, θ)``
        (the Gauss–Newton target, or None where the system cannot be factored) and
        ``engine_logdet(grad, θ)`` (NaN where it cannot) solve instead.
    value, gradient : callable(φ) → ndarray
        μ (n) and ∂μ/∂φ (n × s), C-contiguous float64.
    hessian : callable(φ) → ndarray, or None
        ∂²μ/∂φ∂φ' (n × s × s); only the entries between slot parameters are read.
    """

    cdef const double[::1] y
    cdef const int64_t[:, ::1] slot_index
    cdef const int64_t[::1] slots
    cdef int n_params
    cdef const int[::1] tmpl, tmpl_off, term_k, term_levels
    cdef double[::1] Tbuf
    cdef BlockedSystem system
    cdef object engine_step, engine_logdet, value, gradient, hessian
    # work space: two points (current and trial), swapped on acceptance
    cdef object phi_cur, phi_try
    cdef double[:, ::1] bs_cur, bs_try
    cdef object working_array
    cdef double[::1] b, working, target, u_try
    cdef double[:, :, ::1] E
    cdef double[:, ::1] shift
    cdef readonly long iterations

    def __init__(self, y, slot_index, slots, int n_params, tmpl, tmpl_off, term_k,
                 term_levels, BlockedSystem system, engine_step, engine_logdet, value,
                 gradient, hessian):
        cdef Py_ssize_t n = len(y), K = len(slots), q = 0, t
        self.y, self.slot_index, self.slots, self.n_params = y, slot_index, slots, n_params
        self.tmpl, self.tmpl_off, self.term_k, self.term_levels = (
            tmpl, tmpl_off, term_k, term_levels)
        if self.slot_index.shape[0] != n or self.slot_index.shape[1] != K:
            raise ValueError("slot_index must be n × K")
        for t in range(term_k.shape[0]):
            q += term_k[t] * term_levels[t]
        if K and (np.min(slot_index) < 0 or np.max(slot_index) >= q):
            raise ValueError("slot_index points outside b")
        if K and (np.min(slots) < 0 or np.max(slots) >= n_params):
            raise ValueError("slots name columns outside φ")
        if system is not None and (system.Z1.shape[0] != n or
                                   system.Z1.shape[1] + system.z_cols.shape[1] != K):
            raise ValueError("the blocked system's slots do not match the model's")
        self.Tbuf = np.empty(max(1, len(tmpl)))
        self.system = system
        self.engine_step, self.engine_logdet = engine_step, engine_logdet
        self.value, self.gradient, self.hessian = value, gradient, hessian
        self.phi_cur, self.phi_try = np.empty((n, n_params)), np.empty((n, n_params))
        self.bs_cur, self.bs_try = np.empty((n, K)), np.empty((n, K))
        self.working_array = np.empty(n)
        self.working = self.working_array
        self.b, self.target, self.u_try = np.empty(q), np.empty(q), np.empty(q)
        self.E, self.shift = np.empty((n, K, K)), np.empty((n, K))
        self.iterations = 0

    # -- the pieces of an iteration --------------------------------------------------
    cdef void _lambda_times(self, const double[::1] u) noexcept nogil:
        """b = Λ_θ u with the T blocks in Tbuf: b_l = T u_l per level l of each term."""
        cdef int t, k, a, s, off = 0
        cdef Py_ssize_t level
        cdef double acc
        cdef double* T
        for t in range(self.term_k.shape[0]):
            k = self.term_k[t]
            T = &self.Tbuf[self.tmpl_off[t]]
            for level in range(self.term_levels[t]):
                for a in range(k):
                    acc = 0.0
                    for s in range(a + 1):  # T is lower triangular
                        acc = acc + T[a * k + s] * u[off + s]
                    self.b[off + a] = acc
                off = off + k

    cdef void _place(self, const double[::1] u, const double[:, ::1] phi_fixed,
                     double[:, ::1] phi, double[:, ::1] bs) noexcept nogil:
        """b = Λu onto each observation's slots (bs) and φ = Xβ + b (two terms on one
        parameter add)."""
        cdef Py_ssize_t n = phi.shape[0], i
        cdef int K = self.slots.shape[0], s, j
        cdef double v
        self._lambda_times(u)
        for i in range(n):
            for j in range(self.n_params):
                phi[i, j] = phi_fixed[i, j]
            for s in range(K):
                v = self.b[self.slot_index[i, s]]
                bs[i, s] = v
                phi[i, self.slots[s]] += v

    cdef object _value(self, object phi):
        """μ at φ, or None where it is not finite."""
        mu = self.value(phi)
        cdef const double[::1] m = mu
        if m.shape[0] != self.y.shape[0]:
            raise ValueError(f"the model function returned {m.shape[0]} values for "
                             f"{self.y.shape[0]} observations")
        return mu if _finite(&m[0], m.shape[0]) else None

    cdef object _gradient(self, object phi):
        """∂μ/∂φ at φ, or None where it is not finite."""
        grad = self.gradient(phi)
        cdef const double[:, ::1] g = grad
        if g.shape[0] != self.y.shape[0] or g.shape[1] != self.n_params:
            raise ValueError(f"the model's gradient has shape {grad.shape}; expected "
                             f"({self.y.shape[0]}, {self.n_params})")
        return grad if _finite(&g[0, 0], g.shape[0] * g.shape[1]) else None

    cdef double _r2(self, const double[::1] mu, const double[::1] u) noexcept nogil:
        """‖y − μ‖² + ‖u‖²."""
        cdef Py_ssize_t i
        cdef double r2 = 0.0, r
        for i in range(mu.shape[0]):
            r = self.y[i] - mu[i]
            r2 = r2 + r * r
        for i in range(u.shape[0]):
            r2 = r2 + u[i] * u[i]
        return r2

    cdef void _load(self, const double[:, ::1] grad) noexcept nogil:
        """The blocked system's values: term 1's covariates and the later slots from
        ∂μ/∂φ on the slots, and the working response as y."""
        cdef Py_ssize_t n = grad.shape[0], i
        cdef int k1 = self.system.Z1.shape[1], k2 = self.system.z_vals.shape[1], a
        cdef int p = self.system.p
        for i in range(n):
            for a in range(k1):
                self.system.Z1[i, a] = grad[i, self.slots[a]]
            for a in range(k2):
                self.system.z_vals[i, a] = grad[i, self.slots[k1 + a]]
            self.system.xy[i, p] = self.working[i]

    cdef bint _blocked_target(self, const double[::1] theta, const double[:, ::1] grad,
                              bint newton):
        """Factor the (Newton or Gauss–Newton) system and put its solution in target;
        False where it is not positive definite or the solution is not finite."""
        cdef double logdet
        self._load(grad)
        self.system.sum_products(True)
        if newton:
            self.system.add_slot_products(self.E, self.shift, True, True)
        if self.system.refactor(theta, &logdet) != 0:
            return False
        self.system.modes_into(self.target)
        return _finite(&self.target[0], self.target.shape[0])

    cdef bint _curvature(self, object phi, const double[::1] mu):
        """E_i = −r_i H_i on the slots (r = y − μ) and shift_i = E_i b_i, the Newton
        terms of ‖y − μ(u)‖² + ‖u‖² (see ``BlockedEngine.set_Z``); False where the
        Hessian is not finite."""
        H = self.hessian(phi)
        cdef const double[:, :, ::1] h = H
        cdef Py_ssize_t n = mu.shape[0], i
        cdef int K = self.slots.shape[0], a, c, P = self.n_params
        cdef double r, acc
        if h.shape[0] != n or h.shape[1] != P or h.shape[2] != P:
            raise ValueError(f"the model's Hessian has shape {H.shape}; expected "
                             f"({n}, {P}, {P})")
        for i in range(n):
            r = self.y[i] - mu[i]
            for a in range(K):
                acc = 0.0
                for c in range(K):
                    self.E[i, a, c] = -r * h[i, self.slots[a], self.slots[c]]
                    acc = acc + self.E[i, a, c] * self.bs_cur[i, c]
                self.shift[i, a] = acc
        return _finite(&self.E[0, 0, 0], self.E.shape[0] * K * K)

    # -- PNLS ------------------------------------------------------------------------
    def phi(self, const double[::1] theta, const double[:, ::1] phi_fixed,
            const double[::1] u):
        """φ = Xβ + Λ_θu per observation (a new array)."""
        if u.shape[0] != self.b.shape[0] or phi_fixed.shape[0] != self.y.shape[0] or \
                phi_fixed.shape[1] != self.n_params:
            raise ValueError("u or Xβ does not match the model's layout")
        out = np.empty((self.y.shape[0], self.n_params))
        bs = np.empty((self.y.shape[0], self.slots.shape[0]))
        _fill_lambda_blocks(theta, self.tmpl, self.tmpl_off, self.term_k, self.Tbuf)
        self._place(u, phi_fixed, out, bs)
        return out

    def run(self, theta_array, const double[:, ::1] phi_fixed, double[::1] u, bint newton,
            double tol, double u_tol, int max_iterations):
        """ũ(θ, β) into u (its start on entry; 0 is tried where the model cannot be
        evaluated there).

        Each iteration solves for the Newton point (Gauss–Newton where ``newton`` is
        false or the Hessian is not positive definite) and halves the step until
        r² = ‖y − μ(u)‖² + ‖u‖² does not increase.  Stops when the decrease of r² is
        below ``tol``·r² and the largest change of u below ``u_tol``·max(1, |u|∞), both
        scaled by the remaining fraction a linear rate ρ implies (ρ/(1 − ρ)), or when
        no step decreases r².

        Returns
        -------
        (ok, r2, logdet, converged)
            ok is false where the model cannot be evaluated or the system not factored.
        """
        cdef const double[::1] theta = theta_array
        cdef Py_ssize_t n = self.y.shape[0], q = self.b.shape[0], i
        cdef double r2, r2_try = 0.0, step, decrease, moved, previous = 0.0, rate, left
        cdef double top, logdet
        cdef bint converged = False, accepted, solved
        cdef int iteration
        if u.shape[0] != q or phi_fixed.shape[0] != n or phi_fixed.shape[1] != self.n_params:
            raise ValueError("u or Xβ does not match the model's layout")
        newton = newton and self.system is not None and self.hessian is not None
        _fill_lambda_blocks(theta, self.tmpl, self.tmpl_off, self.term_k, self.Tbuf)
        self._place(u, phi_fixed, self.phi_cur, self.bs_cur)
        mu = self._value(self.phi_cur)
        grad = None if mu is None else self._gradient(self.phi_cur)
        if grad is None:
            u[:] = 0.0
            self._place(u, phi_fixed, self.phi_cur, self.bs_cur)
            mu = self._value(self.phi_cur)
            grad = None if mu is None else self._gradient(self.phi_cur)
            if grad is None:
                return False, INFINITY, NAN, False
        r2 = self._r2(mu, u)
        for iteration in range(max_iterations):
            self.iterations += 1
            self._working(mu, grad)
            solved = False
            if newton and self._curvature(self.phi_cur, mu):
                solved = self._blocked_target(theta, grad, True)
            if not solved:
                if self.system is not None:
                    solved = self._blocked_target(theta, grad, False)
                else:
                    solved = self._engine_target(theta_array, grad)
                if not solved:
                    return False, INFINITY, NAN, False
            step, accepted = 1.0, False
            while step > 1e-10:
                for i in range(q):
                    self.u_try[i] = u[i] + step * (self.target[i] - u[i])
                self._place(self.u_try, phi_fixed, self.phi_try, self.bs_try)
                mu_try = self._value(self.phi_try)
                if mu_try is not None:
                    r2_try = self._r2(mu_try, self.u_try)
                    if r2_try <= r2:
                        grad_try = self._gradient(self.phi_try)
                        if grad_try is not None:
                            accepted = True
                            break
                step = step / 2
            if not accepted:
                converged = True  # no decrease possible: at the minimum to rounding
                break
            decrease, moved, top = r2 - r2_try, 0.0, 0.0
            for i in range(q):
                moved = max(moved, fabs(self.u_try[i] - u[i]))
                u[i] = self.u_try[i]
                top = max(top, fabs(u[i]))
            r2, mu, grad = r2_try, mu_try, grad_try
            self.phi_cur, self.phi_try = self.phi_try, self.phi_cur
            self.bs_cur, self.bs_try = self.bs_try, self.bs_cur
            # what is left after a linear rate ρ (Gauss–Newton) is about (last change)·
            # ρ/(1 − ρ); after Newton steps ρ ≈ 0.  The log-det depends on ũ even where
            # r² is flat, so both must be small.
            rate = min(moved / previous, 0.99) if previous > 0 else 0.0
            left = max(1.0, rate / (1.0 - rate))
            if decrease * left <= tol * r2 and moved * left <= u_tol * max(1.0, top):
                converged = True
                break
            previous = moved
        # the factor at ũ itself, for the Laplace log-determinant
        if self.system is not None:
            self._load(grad)
            self.system.sum_products(True)
            if self.system.refactor(theta, &logdet) != 0:
                return False, INFINITY, NAN, False
        else:
            logdet = self.engine_logdet(grad, theta_array)
            if not isfinite(logdet):
                return False, INFINITY, NAN, False
        return True, r2, logdet, converged

    cdef void _working(self, const double[::1] mu, const double[:, ::1] grad) noexcept nogil:
        """The working response y − μ + Uu, Uu = Σ over slots of ∂μ/∂φ times b."""
        cdef Py_ssize_t i
        cdef int s, K = self.slots.shape[0]
        cdef double acc
        for i in range(mu.shape[0]):
            acc = self.y[i] - mu[i]
            for s in range(K):
                acc = acc + grad[i, self.slots[s]] * self.bs_cur[i, s]
            self.working[i] = acc

    cdef bint _engine_target(self, object theta, object grad):
        """The Gauss–Newton target by the engine's own solve."""
        target = self.engine_step(grad, self.working_array, theta)
        if target is None:
            return False
        cdef const double[::1] t = np.ascontiguousarray(target, dtype=float)
        if t.shape[0] != self.target.shape[0]:
            raise ValueError("the engine's modes do not match the model's layout")
        self.target[:] = t
        return _finite(&self.target[0], self.target.shape[0])
