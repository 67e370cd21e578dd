"""The well-conditioned parametrisation a linear mixed model is computed in.

Owns the maps between the user's parametrisation (lme4's θ, β, σ and random
effects b) and the working one the factorisation sees.  Each map changes
coordinates only, never the family of models, so the optimum is the same point
and the objective differs by an exact constant.

Why: the profiled deviance is read off the Cholesky factor of the cross-products
(r² is the square of its last diagonal entry, log|R_X|² the log of its X block's
diagonal).  That read-off loses about log10(mean(y)²/σ²) digits when y is far
from zero, and X or Z columns far from zero make the factor itself ill
conditioned (a random slope on x ≈ 1000 ± 1 stopped 2% above the optimum, as in
lme4).  Computing the residuals directly (lme4's way) fixes only the first, so
instead the engine works in coordinates in which every number is O(1):

* fixed effects: X D⁻¹ = QR, D powers of two bringing each column into [-1, 1]
  (exact, and QR cannot overflow); the engine gets X_w = √n·Q (orthogonal
  columns of unit RMS) and β = β₀ + s·Aβ_w with A = D⁻¹R⁻¹√n;
* response: y_w = (y − Xβ₀)/s, β₀ the least-squares fit (y's location never
  reaches the engine) and s a power of two near the RMS of what is left;
* random effects: a correlated term's columns Z_t D_t⁻¹ = Q_t R_t become
  Z_t B_t = √n·Q_t (a slope is centred on its mean when the term has an
  intercept), with B_t = D_t⁻¹R_t⁻¹√n and T_t T_t' = B_t T_w T_w' B_t'; a scalar
  term (including each of a ``||`` term's) is only scaled, by its column's RMS (an
  intercept's is 1), since shifting one of several independent terms would change the
  family: the optimiser then takes a slope's variance in the
  same steps whatever its covariate's units (with x ≈ 1000, lme4's θ of a slope
  beside an intercept is 1e-3 at the optimum, and a start of 1 stopped BOBYQA, and
  lme4, at the other, worse, optimum);
* objective: ML adds n·log s², REML adds (n − p)·log s² − 2·log|det A|
  (log|R_X|² = log|R_Xw|² − 2 log|det A|); log|L_θ|² is invariant.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .linalg import magnitudes, scaled_qr, solve_triangular

__all__ = ["RandomBases", "Conditioning", "LinkedCoordinates", "pow2_rms"]


def rms(v: np.ndarray) -> float:
    """v's root mean square, without overflow or underflow in the squares (0 for an
    empty or zero vector)."""
    return magnitudes(np.ravel(np.asarray(v, dtype=float)))[0]


def pow2_rms(v: np.ndarray, size: float | None = None) -> float:
    """A power of two within a factor √2 of v's root mean square (1 for a zero vector);
    ``size`` is ``rms(v)`` where the caller has it."""
    size = rms(v) if size is None else size
    if not size > 0 or not math.isfinite(size):
        return 1.0
    return math.ldexp(1.0, round(math.log2(size)))




def _lower_factor(M: np.ndarray) -> np.ndarray:
    """The lower-triangular T with non-negative diagonal and TT' = MM' (also for a
    singular M): from the QR factorisation of M'."""
    R = np.linalg.qr(M.T, mode="r")
    signs = np.where(np.diag(R) < 0, -1.0, 1.0)
    return (signs[:, None] * R).T


def _orthonormal_basis(Z: np.ndarray):
    """(√n·Q, B) with Z B = √n·Q, Q's columns orthonormal; None when Z's columns are
    (numerically) dependent."""
    n = Z.shape[0]
    if n < Z.shape[1]:
        return None
    Q, R, D, _ = scaled_qr(Z, True)
    diag = np.diag(R)
    if diag.size and not diag.min() > 1e-10 * diag.max():
        return None
    # Z B = √n·Q with Z D⁻¹ = QR: B = D⁻¹R⁻¹√n (R⁻¹'s rows scaled by 1/D)
    B = solve_triangular(R, np.eye(len(D)), lower=False) * math.sqrt(n) / D[:, None]
    return math.sqrt(n) * Q, B


class RandomBases:
    """Per random-effects term the basis B_t in which the engine sees its columns.

    Parameters
    ----------
    layout : RandomEffectsLayout
        A design's random-effects terms (``terms``) and θ layout.

    Attributes
    ----------
    bases : list of ndarray
        B_t (k × k) of each term; the identity where a term is left as it is.
    working_terms : list of RandomTerm
        The terms with the working columns Z_t B_t.
    scalar_factor : ndarray
        Per θ entry: b with θ = b·θ_w for a scalar term (B_t = [[b]]), NaN for the
        entries of vector terms.
    """

    def __init__(self, layout):
        self.layout = layout
        self.bases, self.working_terms = [], []
        # θ entries of scalar terms map by a factor; vector terms through their blocks
        scalar_factor, self._vector_terms, offset = [], [], 0
        for t, term in enumerate(layout.terms):
            n_theta = len(term.theta_positions())
            if term.k == 1:
                # its RMS itself, not a power of two near it: θ_w is then the same number
                # whatever the covariate's units, as a vector term's is in its orthonormal
                # basis, and so is every difference taken in it (Satterthwaite's Hessian)
                size = rms(term.Z[:, 0])
                c = size if size > 0 and math.isfinite(size) else 1.0
                B, Zw = np.array([[1.0 / c]]), (term.Z if c == 1.0 else term.Z / c)
            else:
                found = _orthonormal_basis(term.Z)
                B, Zw = (np.eye(term.k), term.Z) if found is None else (found[1], found[0])
                self._vector_terms.append((t, offset, n_theta))
            scalar_factor.extend([B[0, 0]] * n_theta if term.k == 1 else [np.nan] * n_theta)
            self.bases.append(B)
            # a term left as it is is shared, not copied (most terms of most models)
            self.working_terms.append(term if Zw is term.Z and Zw.flags.c_contiguous else
                                      dataclasses.replace(term, Z=np.ascontiguousarray(Zw)))
            offset += n_theta
        self.scalar_factor = np.array(scalar_factor)
        self._scalar = np.isfinite(self.scalar_factor)

    def _map(self, theta, forward: bool) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        if not self._vector_terms:  # every entry maps by its factor
            return theta * self.scalar_factor if forward else theta / self.scalar_factor
        out = np.empty_like(theta)
        factor = self.scalar_factor[self._scalar]
        out[self._scalar] = theta[self._scalar] * factor if forward else \
            theta[self._scalar] / factor
        for t, offset, count in self._vector_terms:
            term = self.layout.terms[t]
            T = np.zeros((term.k, term.k))
            positions = term.theta_positions()
            for (i, j), value in zip(positions, theta[offset:offset + count]):
                T[i, j] = value
            B = self.bases[t]
            M = B @ T if forward else solve_triangular(B, T, lower=False)
            L = _lower_factor(M)
            out[offset:offset + count] = [L[i, j] for i, j in positions]
        return out

    def theta(self, theta_w) -> np.ndarray:
        """lme4's θ from the working θ_w: T = lower factor of B T_w."""
        return self._map(theta_w, forward=True)

    def theta_working(self, theta) -> np.ndarray:
        """θ_w from lme4's θ: T_w = lower factor of B⁻¹T."""
        return self._map(theta, forward=False)

    def effects(self, b_w, scale: float = 1.0) -> np.ndarray:
        """b (user units, flat in θ's term order) from working effects b_w: per level
        b = s·B b_w, as Z b = s·(Z B) b_w."""
        blocks = self.layout.by_term(b_w)
        return np.concatenate([scale * (block @ B.T).ravel()
                               for block, B in zip(blocks, self.bases)])


class _RandomCoordinates:
    """θ in working coordinates, through ``self.random`` (a ``RandomBases``)."""

    def theta(self, theta_w) -> np.ndarray:
        """lme4's θ from the working θ_w."""
        return self.random.theta(theta_w)

    def theta_working(self, theta) -> np.ndarray:
        """θ_w from lme4's θ."""
        return self.random.theta_working(theta)


class Conditioning(_RandomCoordinates):
    """The working parametrisation of one linear mixed model (a full-rank X).

    Parameters
    ----------
    design : LMMDesign

    Attributes
    ----------
    working : LMMDesign
        The design the engine factors: X_w, y_w and the working random-effects terms.
    random : RandomBases
    scale : float
        s: y_w = (y − Xβ₀)/s, σ = s·σ_w.
    """

    def __init__(self, design):
        n, p = design.n, design.p
        self.n, self.p = n, p
        self.random = RandomBases(design)
        if p:
            Q, self._R, self._D, _ = scaled_qr(design.X, True)
            X_w = math.sqrt(n) * Q  # Q = X_w/√n is not kept: one n × p copy less
            # log|det A|, A = D⁻¹R⁻¹√n
            self.log_det_A = (0.5 * p * math.log(n) - math.fsum(map(math.log, self._D.tolist()))
                              - math.fsum(map(math.log, self._R.diagonal().tolist())))
        else:
            X_w, self.log_det_A = design.X, 0.0
        X_w = np.ascontiguousarray(X_w)
        self.working = dataclasses.replace(design, X=X_w, y=self._working_response(design.y, X_w),
                                           terms=self.random.working_terms)

    def set_response(self, y) -> np.ndarray:
        """Take a new response (same layout); returns y_w, which the engine then needs."""
        y_w = self._working_response(y, self.working.X)
        self.working = dataclasses.replace(self.working, y=y_w)
        return y_w

    def _working_response(self, y, X_w) -> np.ndarray:
        """y_w = (y − Xβ₀)/s, setting β₀, s and what is read off them."""
        y = np.asarray(y, dtype=float)
        if self.p:
            qty = X_w.T @ y / math.sqrt(self.n)
            residual = y - X_w @ (qty / math.sqrt(self.n))
            self.beta0 = solve_triangular(self._R, qty, lower=False) / self._D
        else:
            residual, self.beta0 = y, np.zeros(0)
        spread, largest = magnitudes(residual)
        self.scale = pow2_rms(residual, spread)
        y_w = residual / self.scale
        #: the RMS of y_w (within a factor √2 of 1): σ_w over it is σ relative to the
        #: spread the fixed effects leave in y
        self.working_rms = spread / self.scale if spread > 0 else 1.0
        # rounding leaves ~4e-14·max|y| of an exactly fitted y at n = 5,000
        self.exact_fit = largest <= 1e-12 * magnitudes(y)[1]
        return y_w

    # ---- the maps ------------------------------------------------------------------------
    def offset(self, REML: bool) -> float:
        """objective(θ) − objective_w(θ_w): the exact constant between the two criteria."""
        log_s2 = 2.0 * math.log(self.scale)
        if REML:
            return (self.n - self.p) * log_s2 - 2.0 * self.log_det_A
        return self.n * log_s2

    def beta(self, beta_w) -> np.ndarray:
        """β = β₀ + s·D⁻¹R⁻¹√n β_w."""
        if not self.p:
            return np.zeros(0)
        step = solve_triangular(self._R, beta_w, lower=False)
        return self.beta0 + (self.scale * math.sqrt(self.n)) * step / self._D

    def beta_jacobian(self) -> np.ndarray:
        """∂β/∂β_w = s·D⁻¹R⁻¹√n (p × p)."""
        return self.scale * self._unit_beta_jacobian

    @functools.cached_property
    def _unit_beta_jacobian(self) -> np.ndarray:
        """D⁻¹R⁻¹√n: ``beta_jacobian`` over s, which a new response leaves as it is."""
        if not self.p:
            return np.zeros((0, 0))
        R_inv = solve_triangular(self._R, np.eye(self.p), lower=False)
        return R_inv * (math.sqrt(self.n) / self._D[:, None])

    def beta_working(self, beta) -> np.ndarray:
        """β_w = R D (β − β₀) / (s√n)."""
        if not self.p:
            return np.zeros(0)
        delta = (np.asarray(beta, dtype=float) - self.beta0) * self._D
        return self._R @ delta / (self.scale * math.sqrt(self.n))

    def beta_cov_root(self, L_w) -> np.ndarray:
        """K with cov(β̂) = σ²KK', from the working factor's X block (L_w = R_Xw').

        cov(β̂_w) = σ_w²(L_w L_w')⁻¹ and β = β₀ + s·Aβ_w give K = A L_w⁻ᵀ.
        """
        if not self.p:
            return np.zeros((0, 0))
        # R⁻¹L_w⁻ᵀ = (L_w'R)⁻¹, and L_w'R is upper triangular: one solve, not two
        K = solve_triangular(L_w.T @ self._R, np.eye(self.p), lower=False)
        return K * (math.sqrt(self.n) / self._D[:, None])

    def effects(self, b_w) -> np.ndarray:
        """b in user units from the engine's working b_w = Λ_w ũ_w."""
        return self.random.effects(b_w, self.scale)


#: A fixed-effects column is centred for a linked model's optimiser when its mean exceeds
#: this many SDs (its coordinate would then be nearly collinear with the intercept's).
CENTRE_RATIO = 10.0


class LinkedCoordinates(_RandomCoordinates):
    """The coordinates z = (θ_w, γ, log(σ/s)) a linked model's optimiser works in.

    θ_w is ``RandomBases``' working θ; β = Mγ, X_w = XM.  Unlike ``Conditioning``,
    X may be rank deficient (a linked model keeps it so), so M does not
    orthogonalise: it centres a column far from zero on its mean (when X has an
    intercept column), divides each column by a power of two near its RMS and
    multiplies by one near the response's SD, so that γ has no units: the
    optimiser's tolerances, the KKT residual and the steps of every difference then
    mean the same whatever the units of y and of the covariates.

    Parameters
    ----------
    design : LMMDesign

    Attributes
    ----------
    working : LMMDesign
        The design with X_w and the working random-effects terms.
    M : ndarray (p × p)
    response_scale : float
        s, a power of two near the response's SD: γ's unit is s/(column's size), and
        z's last coordinate is log(σ/s).
    sd_factor : ndarray
        For each θ entry of a scalar term, the factor b with θ = b·θ_w (NaN for the
        entries of vector terms).
    """

    def __init__(self, design):
        self.random = RandomBases(design)
        X = design.X
        p = X.shape[1]
        M, X_w = np.eye(p), np.array(X, dtype=float)
        constant = [j for j in range(p) if X.shape[0] and X[0, j] != 0 and np.all(X[:, j] == X[0, j])]
        if constant:
            i0 = constant[0]
            mean, sd = X.mean(axis=0), X.std(axis=0)
            for j in range(p):
                if j != i0 and sd[j] > 0 and abs(mean[j]) > CENTRE_RATIO * sd[j]:
                    X_w[:, j] = X[:, j] - mean[j]
                    M[i0, j] = -mean[j] / X[0, i0]
        for j in range(p):
            scale = pow2_rms(X_w[:, j])
            X_w[:, j] /= scale
            M[:, j] /= scale
        self._design, self._M_columns, self._X_columns = design, M, X_w
        self.sd_factor = self.random.scalar_factor
        self.set_response(design.y)

    def set_response(self, y) -> None:
        """γ's unit for the response ``y``: ``M`` and the working design follow it (its
        spread, a power of two; the columns' own scaling is kept)."""
        y = np.asarray(y, dtype=float)
        self.response_scale = s = pow2_rms(y - y.mean()) if y.size else 1.0
        self.M = self._M_columns * s
        self.working = dataclasses.replace(self._design, X=np.ascontiguousarray(self._X_columns * s),
                                           y=y, terms=self.random.working_terms)

    def beta(self, gamma) -> np.ndarray:
        return self.M @ np.asarray(gamma, dtype=float)

    def gamma(self, beta) -> np.ndarray:
        return np.linalg.solve(self.M, np.asarray(beta, dtype=float)) if len(beta) else \
            np.zeros(0)

    def effects(self, b_w) -> np.ndarray:
        return self.random.effects(b_w)
