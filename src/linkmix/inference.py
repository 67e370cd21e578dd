"""Small-sample tests of fixed effects: Satterthwaite and Kenward–Roger degrees of freedom.

Owns the t test of a contrast λ'β of a linear mixed model's fixed effects, with the
estimate's variance v = λ'Φλ (Φ = cov(β̂)) and degrees of freedom by one of three
methods:

* **Satterthwaite** (lmerTest's method): the variance parameters φ = (θ, σ) have
  covariance A = 2H⁺, H the Hessian of −2 log L (REML: of the restricted likelihood)
  over φ at the estimates with β̂(θ) profiled (lmerTest's ``devfun_vp``)
  and H⁺ its inverse over the directions that are not flat (``_scaled_pinv``); with
  g_k = λ'(∂Φ/∂φ_k)λ, df = 2v² / g'Ag.  φ = (θ_w, log σ), coordinates in which nothing
  depends on the units of y or of the covariates.
* **Kenward–Roger** (pbkrtest's method, REML fits): the covariance of y is
  Σ = Σ_i γ_i G_i over every variance and covariance γ_i of every term and σ²; Φ is
  replaced by the bias-corrected Φ_A = Φ + 2ΦUΦ and the df come from the moments of the
  Wald statistic (Kenward & Roger 1997, without the second-derivative terms R_ij, as
  pbkrtest).  All products with Σ⁻¹ are taken through Woodbury's identity in the
  random effects' dimension q, so no n × n matrix is formed.
* **Wald**: infinite df (a z test).

The numerical derivatives follow ``linkmix.numdiff``.  The p value is two-sided from
Student's t (the normal for infinite df).  Contrasts are read from text by a small
whitelist grammar (``parse_contrast``): weighted sums of coefficient names, nothing
evaluated.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _dense, numdiff
from .errors import ArgumentError, FitError

__all__ = ["DDF_METHODS", "FixedEffectTests", "Satterthwaite", "KenwardRoger", "t_tests",
           "t_pvalues", "check_ddf", "contrast_matrix", "parse_contrast",
           "benjamini_hochberg", "quadratic_forms", "expand_contrasts", "pairwise_contrasts"]

DDF_METHODS = ("satterthwaite", "kenward-roger", "wald")
#: Eigenvalues of a Hessian scaled to a unit diagonal at or below this times the largest
#: are left out of its inverse (``_scaled_pinv``): a direction in which the criterion is
#: flat carries no information about the variance of the estimate.  lmerTest cuts at
#: 1e-8 absolute in (θ, σ), which depends on the units of y (σ's curvature is 2m/σ²).
EIGEN_RTOL = 1e-8
#: Kenward–Roger works with q × q and n × q dense matrices: beyond this many entries of
#: the n × q ones, it refuses rather than exhaust memory.
KR_MAX_ENTRIES = 50_000_000


def check_ddf(ddf) -> str:
    """The ddf method's canonical name, or an ArgumentError naming the choices."""
    if isinstance(ddf, str):
        name = ddf.strip().lower().replace("_", "-").replace(" ", "-")
        name = {"kr": "kenward-roger", "kenwardroger": "kenward-roger", "z": "wald"}.get(
            name, name)
        if name in DDF_METHODS:
            return name
    raise ArgumentError(f"ddf must be one of {list(DDF_METHODS)}, not {ddf!r}")


def t_pvalues(t, df) -> np.ndarray:
    """Two-sided p values of t statistics with ``df`` degrees of freedom (inf: normal)."""
    from scipy import special

    t, df = np.broadcast_arrays(np.abs(np.asarray(t, dtype=float)),
                                np.asarray(df, dtype=float))
    with np.errstate(invalid="ignore"):
        p = np.where(np.isinf(df), 2.0 * special.ndtr(-t), 2.0 * special.stdtr(df, -t))
    return np.where(np.isnan(t) | np.isnan(df) | (df <= 0), np.nan, p)


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p values (NaN stays NaN and is not counted)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    order = np.argsort(p[ok])
    ranked = p[ok][order] * ok.sum() / np.arange(1, ok.sum() + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    values = np.empty_like(adjusted)
    values[order] = np.minimum(adjusted, 1.0)
    out[ok] = values
    return out


def t_tests(estimate, variance, df) -> dict:
    """The columns of t tests as arrays: estimate, std_error, df, t_value, p_value."""
    estimate = np.asarray(estimate, dtype=float)
    se = np.sqrt(np.asarray(variance, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = estimate / se
    return {"estimate": estimate, "std_error": se, "df": np.asarray(df, dtype=float),
            "t_value": t, "p_value": t_pvalues(t, df)}


class FixedEffectTests:
    """``coef_table`` and ``contrast`` for a fit that provides ``_fixed_names`` (the fixed
    effects' names), ``_fixed_estimates`` (β̂) and ``_variance_df(L, method)`` (the
    variance of Lβ̂ and its df by a checked method name)."""

    #: The degrees of freedom of t tests unless a call names others.
    default_ddf = "satterthwaite"

    @property
    def fixed_names(self) -> list[str]:
        """The fixed effects' names, which contrasts refer to."""
        return list(self._fixed_names)

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """A t test of every fixed effect: columns ``estimate, std_error, df, t_value,
        p_value``, by fixed-effect name.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "wald"}, optional
            Degrees of freedom (default ``default_ddf``): lmerTest's Satterthwaite
            method, pbkrtest's Kenward–Roger (REML fits; its SE is the adjusted one), or
            Wald (infinite df: a z test).  See ``linkmix.inference``.
        """
        names = self._fixed_names
        return self._t_tests(np.eye(len(names)), tuple(names), ddf)

    def contrast(self, L, ddf: str | None = None) -> pd.DataFrame:
        """t tests of contrasts λ'β = 0, one row each (columns as ``coef_table``).

        ``L`` is a string such as ``"Condition[T.C2] - Condition[T.C3]"`` (weighted sums
        of fixed-effect names), a list of them, a dict {name: weight}, or a matrix with
        one column per fixed effect.
        """
        labels, L = contrast_matrix(L, self._fixed_names)
        return self._t_tests(L, tuple(labels), ddf)

    def tests_record(self, ddf: str | None = None) -> dict:
        """``coef_table(ddf)`` as a JSON-ready record: the method, then each column by
        fixed-effect name."""
        method = check_ddf(self.default_ddf if ddf is None else ddf)
        table = self.coef_table(method)
        return {"ddf": method, **{column: {name: float(v) for name, v in table[column].items()}
                                  for column in ("df", "t_value", "p_value")}}

    def _t_tests(self, L, labels, ddf) -> pd.DataFrame:
        columns = self.t_test_columns(L, ddf)
        # one float block with object labels: a third of the time of a dict of columns
        # with pandas' Arrow-string labels, which a small fit's whole table would spend
        return pd.DataFrame(np.column_stack(list(columns.values())), index=_labels(labels),
                            columns=_labels(tuple(columns)))

    def t_test_columns(self, L, ddf: str | None = None) -> dict:
        """The t tests of the rows of a contrast matrix ``L`` as arrays by column name
        (``coef_table``'s columns; no DataFrame, for many groups)."""
        method = check_ddf(self.default_ddf if ddf is None else ddf)
        variance, df = self._variance_df(L, method)
        return t_tests(L @ self._fixed_estimates, variance, df)


@functools.lru_cache(maxsize=1024)
def _labels(names: tuple[str, ...]) -> pd.Index:
    """An object-dtype Index of ``names``, cached: pandas takes ~15 μs to make one, and
    the fits of one layout (a batch's groups, refits) share their names."""
    return pd.Index(list(names), dtype=object)


def quadratic_forms(L: np.ndarray, M: np.ndarray) -> np.ndarray:
    """λ_r'Mλ_r for each row λ_r of L (one matrix product: a three-operand einsum
    loops in C without BLAS, 20 ms for 100 coefficients)."""
    return np.sum((L @ M) * L, axis=1)


@dataclass(frozen=True)
class Satterthwaite:
    """The parts of Satterthwaite's df that do not depend on the contrast.

    Attributes
    ----------
    vcov_beta : ndarray (p, p)
        Φ = cov(β̂) = σ²(X'V₀⁻¹X)⁻¹.
    vcov_varpar : ndarray (d, d)
        A = 2H⁺ over φ = (θ_w, log σ), d = dim θ + 1 (a linked fit: its own φ).
    jacobian : ndarray (d, p, p)
        ∂Φ/∂φ_k.
    hessian_eigenvalues : ndarray (d,)
        Of H scaled to a unit diagonal, for a report on how well the variance
        parameters are determined.
    """

    vcov_beta: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: np.ndarray
    hessian_eigenvalues: np.ndarray

    @classmethod
    def of(cls, model, theta_w, sigma, workers: int | None = None) -> "Satterthwaite":
        """From a linear mixed model at its estimates: the working θ_w
        (``linkmix.conditioning``) and σ̂; ``workers`` as ``model.gradient_stencil``.

        The variance parameters are φ = (θ_w, s = log σ): neither depends on the units of
        y or of any covariate (θ_w is relative to σ, in coordinates where every random
        effect's columns are of unit size), and the df, a function of the estimates and
        the criterion's curvature at an interior optimum, are the same in any
        parametrisation; lmerTest's (θ, σ) give the same df where its numerics hold.
        The criterion is D(θ, s) = 2m·s + r²(θ)e^{−2s} + ℓ(θ) + const, m = n (ML) or
        n − p (REML), ℓ = log|L|² (+ log|R_X|² for REML), so H's s row is exact:
        ∂²D/∂s² = 4r²/σ² and ∂²D/∂θ∂s = −2(∂r²/∂θ)/σ².  The θ block,
        ∂²(ℓ + r²/σ²)/∂θ², is where the model gives exact gradients
        (``working_gradients``) the Hessian of the profiled criterion ℓ + m·log r² from
        central differences of its exact gradient (``model.gradient_stencil`` evaluates
        the 2d points, on two threads for a large model; θ_w does not depend on units,
        so neither does the differences' truncation error), plus m·gg'/r⁴
        (g = ∂r²/∂θ_w); else it is differenced with one Richardson step (lmerTest's
        numDeriv takes several), ∂r²/∂θ centrally.
        θ is not bounded below here (lmerTest's convention: D is even in a diagonal
        entry of T, so at θ = 0 the differences see its curvature).  The Jacobian of
        M = (X'V₀⁻¹X)⁻¹ is exact where the model gives it
        (``working_unscaled_vcov_gradient``), else differenced; that of σ²M over s is
        2σ²M.  A = 2H⁺ is taken on H scaled to a unit diagonal (``_scaled_pinv``).  A small
        model gives H and ∂M/∂θ_w exactly from its dense kernel (``working_curvature``,
        ``exact``): nothing is differenced.
        """
        theta_w = np.asarray(theta_w, dtype=float)
        nt = theta_w.size
        REML = model.REML
        s2 = sigma**2

        def theta_part(t):
            state = model.working_state(t)
            return state.logdet_L + (state.logdet_RX if REML else 0.0) + state.r2 / s2

        curvature = model.working_curvature(theta_w) if nt else None
        if curvature is not None:
            return cls.exact(curvature, sigma)
        state = model.working_state(theta_w)
        m = state.n - (state.p if REML else 0)
        H = np.empty((nt + 1, nt + 1))
        H[-1, -1] = 4.0 * state.r2 / s2
        exact = model.working_gradients(theta_w) if nt else None
        if exact is not None:
            stencil = model.gradient_stencil(workers)

            def gradients(points):  # of the profiled criterion ℓ + m·log r²
                slopes = [slope for _, slope in stencil(points)]
                if any(slope is None for slope in slopes):
                    raise FitError("the model's system is not positive definite next to the "
                                   "estimates: Satterthwaite's degrees of freedom cannot be "
                                   "computed")
                return slopes

            H_profiled = numdiff.central_jacobian(gradients, theta_w, rel_step=1e-4)
            H[:nt, :nt] = (0.5 * (H_profiled + H_profiled.T)
                           + m * np.outer(exact[1], exact[1]) / state.r2**2)
        elif nt:
            H[:nt, :nt] = numdiff.richardson_hessian(theta_part, theta_w)
            grad_r2 = numdiff.jacobian(lambda t: model.working_state(t).r2, theta_w,
                                       rel_step=1e-5)[0]
            exact = (None, grad_r2)
        if nt:
            H[:nt, -1] = H[-1, :nt] = -2.0 * exact[1] / s2
        if not np.all(np.isfinite(H)):
            raise FitError("the criterion is not finite next to the estimates: Satterthwaite's "
                           "degrees of freedom cannot be computed")
        A, values = _scaled_pinv(H)
        M = model.working_unscaled_vcov(theta_w)
        p = M.shape[0]
        dM = model.working_unscaled_vcov_gradient(theta_w) if nt else np.zeros((0, p, p))
        if dM is None:
            dM = numdiff.jacobian(lambda t: model.working_unscaled_vcov(t).ravel(),
                                  theta_w).T.reshape(nt, p, p)
        jacobian = np.concatenate([s2 * dM, (2.0 * s2 * M)[None]], axis=0)
        return cls(s2 * M, 2.0 * A, jacobian, values)

    @classmethod
    def exact(cls, curvature, sigma) -> "Satterthwaite":
        """From a model's exact curvature at its estimates (``working_curvature``):
        H's θ block ∂²(ℓ + r²/σ²)/∂θ_w², its s row as in ``of``, and ∂M/∂θ_w as
        given."""
        s2 = sigma**2
        nt = len(curvature.ell_gradient)
        H = np.empty((nt + 1, nt + 1))
        H[:nt, :nt] = curvature.ell_hessian + curvature.r2_hessian / s2
        H[:nt, -1] = H[-1, :nt] = -2.0 * curvature.r2_gradient / s2
        H[-1, -1] = 4.0 * curvature.r2 / s2
        if not np.all(np.isfinite(H)):
            raise FitError("the criterion is not finite next to the estimates: Satterthwaite's "
                           "degrees of freedom cannot be computed")
        A, values = _scaled_pinv(H)
        M = curvature.M
        jacobian = np.concatenate([s2 * curvature.M_gradient, (2.0 * s2 * M)[None]], axis=0)
        return cls(s2 * M, 2.0 * A, jacobian, values)

    @classmethod
    def on_manifold(cls, model, z, second_order) -> "Satterthwaite":
        """For a linked fit (``LinkedModel``) at its optimum z = (θ_w, β_w, log σ).

        The variance parameters are φ = (θ_w, log σ), and A is their block of the fit's
        covariance of z on the constraint manifold (N(N'HN/2)⁻¹N', H the Hessian of
        the Lagrangian D − λ'c).  Φ(φ) is the covariance of β̂ with φ held: with N_β
        spanning the β directions the active constraints allow at fixed φ,
        Φ = G N_β (N_β'H_ββ(φ)N_β/2)⁻¹ N_β'G', N_β from the constraints active at the
        optimum, differentiated at (φ, β̂_w), H_ββ(φ) = ∂²D/∂β_w² there plus the
        constraints' curvature at the optimum, G = ∂β/∂β_w.  Without constraints this is
        lmerTest's method for the ML fit.
        """
        import scipy.linalg

        space = model.space
        nt, p = space.n_theta, space.p
        z = np.asarray(z, dtype=float)
        phi = np.r_[np.arange(nt), len(z) - 1]
        beta = slice(nt, nt + p)
        A = second_order.cov_z[np.ix_(phi, phi)]
        curvature = second_order.lagrangian[beta, beta] - model.mean_hessian(z)
        fixef = np.array(space.kinds) == "fixef"
        G = space.natural_jacobian(z)[fixef][:, beta]

        def beta_cov(values):
            x = z.copy()
            x[phi] = values
            allowed = model.active_constraint_rows(x, z)[:, beta]
            N = scipy.linalg.null_space(allowed) if allowed.shape[0] else np.eye(p)
            reduced = 0.5 * N.T @ (model.mean_hessian(x) + curvature) @ N
            return G @ N @ np.linalg.solve(0.5 * (reduced + reduced.T), N.T) @ G.T

        vcov = beta_cov(z[phi])
        # Φ holds a differenced Hessian where the mean is linked: a step of 1e-3 keeps its
        # rounding from dominating, and one Richardson step its truncation (2e-5 of a df
        # at 1e-6 with plain differences)
        J = numdiff.richardson_jacobian(lambda points: [beta_cov(v).ravel() for v in points],
                                        z[phi], rel_step=1e-3)
        return cls(vcov, A, J.T.reshape(len(phi), p, p), second_order.eigenvalues)

    def test(self, L) -> tuple[np.ndarray, np.ndarray]:
        """(v, df) for each row λ of L: v = λ'Φλ and df = 2v²/g'Ag (inf where g'Ag = 0)."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        return _dense.satterthwaite_test(L, self.vcov_beta, self.vcov_varpar,
                                         np.asarray(self.jacobian, dtype=float))


def _scaled_pinv(H: np.ndarray, rtol: float = EIGEN_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """(H⁺, eigenvalues of S) for a symmetric H: H⁺ = D S⁺ D with S = DHD scaled to a unit
    diagonal (D_kk = H_kk^(−1/2), 1 where H_kk ≤ 0) and S⁺ its inverse over the
    eigenvalues above ``rtol`` times the largest (compiled: ``_dense.scaled_pinv``).

    The scaling makes the cut independent of each coordinate's units: for a
    nonsingular H, H⁺ = H⁻¹ exactly, and rescaling any coordinate rescales H⁺ with it
    (a plain eigenvalue cut on H keeps or drops a direction by its units)."""
    return _dense.scaled_pinv(np.asarray(H, dtype=float), rtol)


@dataclass(frozen=True)
class KenwardRoger:
    """Kenward and Roger's adjusted covariance of β̂ and what their df need, computed in a
    model's working coordinates (``linkmix.conditioning``: orthonormal fixed-effects
    columns, y and the random effects' columns of unit size), so that nothing depends
    on the units of y or of a covariate; β = β₀ + Gβ_w.

    Attributes
    ----------
    vcov_beta : ndarray (p, p)
        Φ, the unadjusted covariance of β̂_w.
    vcov_adjusted : ndarray (p, p)
        Φ_A = Φ + 2ΦUΦ, of β̂_w.
    P : ndarray (m, p, p)
        P_i = −X'Σ⁻¹G_iΣ⁻¹X for each of the m variance parameters γ_i.
    W : ndarray (m, m)
        The covariance of γ̂: 2 × the inverse of the expected information
        I_ij = tr(Σ⁻¹G_iΣ⁻¹G_j) − 2tr(ΦQ_ij) + tr(ΦP_iΦP_j) (over the directions
        that are not flat when it is singular, as pbkrtest's pseudo-inverse).
    beta_jacobian : ndarray (p, p)
        G = ∂β/∂β_w: a contrast λ'β is (G'λ)'β_w.
    """

    vcov_beta: np.ndarray
    vcov_adjusted: np.ndarray
    P: np.ndarray
    W: np.ndarray
    beta_jacobian: np.ndarray

    @classmethod
    def of(cls, model, theta_w, sigma) -> "KenwardRoger":
        """From a REML fit's model (``LinearMixedModel``) at its working θ_w and σ̂."""
        conditioning = model.conditioning
        design = conditioning.working
        X = design.X
        n, p = X.shape
        Z = design.Z_sparse().tocsc()
        q = Z.shape[1]
        if n * q > KR_MAX_ENTRIES:
            raise ArgumentError(f"Kenward-Roger needs dense n × q matrices (n = {n}, q = {q}); "
                                f"use ddf='satterthwaite' for a model this large")
        gammas = _covariance_parameters(design)      # F_i of the m − 1 random-effects γ_i
        Lam = design.Lambda_sparse(np.asarray(theta_w, dtype=float))
        ZL = (Z @ Lam).toarray()                                # n × q
        U = ZL.T @ ZL + np.eye(q)
        from scipy.linalg import cho_factor, cho_solve

        U_factor = cho_factor(U)
        s2 = (sigma / conditioning.scale) ** 2

        def sigma_inv(B):
            """Σ⁻¹B = σ⁻²(B − ZΛU⁻¹Λ'Z'B)."""
            return (B - ZL @ cho_solve(U_factor, ZL.T @ B)) / s2

        Zd = Z.toarray()
        T = sigma_inv(X)                                        # Σ⁻¹X
        S = sigma_inv(Zd)                                       # Σ⁻¹Z
        A = Zd.T @ T                                            # Z'Σ⁻¹X
        M = Zd.T @ S                                            # Z'Σ⁻¹Z
        B = S.T @ T                                             # Z'Σ⁻²X
        N = S.T @ S                                             # Z'Σ⁻²Z
        U_inv = cho_solve(U_factor, np.eye(q))
        # tr(Σ⁻²) = σ⁻⁴ tr((I − ZΛU⁻¹Λ'Z')²) = σ⁻⁴ (n − q + tr(U⁻²))
        trace_sigma_inv2 = (n - q + np.sum(U_inv * U_inv)) / s2**2

        m = len(gammas) + 1
        P = np.empty((m, p, p))
        Q = np.empty((m, m, p, p))
        K = np.empty((m, m))
        # G_i = Z F_i Z' for the random-effects parameters (F_i sparse, q × q), I for σ²
        FA = [F @ A for F in gammas]                            # F_i Z'Σ⁻¹X
        FM = [F @ M for F in gammas]
        for i, F in enumerate(gammas):
            P[i] = -A.T @ FA[i]
            for j in range(i, m - 1):
                Q[i, j] = FA[i].T @ M @ FA[j]
                K[i, j] = np.sum(FM[i] * FM[j].T)              # tr(F_i M F_j M)
            Q[i, m - 1] = FA[i].T @ B                           # X'Σ⁻¹G_iΣ⁻¹Σ⁻¹X
            K[i, m - 1] = np.sum((F @ N).diagonal())            # tr(F_i Z'Σ⁻²Z)
        P[m - 1] = -T.T @ T
        Q[m - 1, m - 1] = T.T @ sigma_inv(T)
        K[m - 1, m - 1] = trace_sigma_inv2
        for i in range(m):
            for j in range(i):
                Q[i, j] = Q[j, i].T
                K[i, j] = K[j, i]

        Phi = np.linalg.inv(X.T @ T)
        Phi = 0.5 * (Phi + Phi.T)
        PhiP = [Phi @ P[i] for i in range(m)]
        info = np.empty((m, m))
        for i in range(m):
            for j in range(i, m):
                info[i, j] = info[j, i] = (K[i, j] - 2.0 * np.sum(Phi * Q[i, j])
                                           + np.sum(PhiP[i] * PhiP[j].T))
        W = 2.0 * _scaled_pinv(info)[0]
        W = 0.5 * (W + W.T)
        Uc = np.zeros((p, p))
        for i in range(m):
            for j in range(m):
                Uc += W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j])
        Uc = 0.5 * (Uc + Uc.T)   # Σ_ij over both orders, as pbkrtest's UU + t(UU)
        adjusted = Phi + 2.0 * Phi @ Uc @ Phi
        return cls(Phi, 0.5 * (adjusted + adjusted.T), P, W, conditioning.beta_jacobian())

    def test(self, L) -> tuple[np.ndarray, np.ndarray]:
        """(λ'Φ_Aλ, df) for each row λ of L (over β): Kenward and Roger's df of the
        one-row Wald statistic (pbkrtest's ``Lb_ddf`` with q = 1)."""
        L = np.atleast_2d(np.asarray(L, dtype=float)) @ self.beta_jacobian
        variance = quadratic_forms(L, self.vcov_adjusted)
        df = np.array([self._df(row) for row in L])
        return variance, df

    def _df(self, lam) -> float:
        v0 = lam @ self.vcov_beta @ lam
        if not v0 > 0:
            return math.nan
        Theta = np.outer(lam, lam) / v0
        ThetaPhi = Theta @ self.vcov_beta
        u = [ThetaPhi @ Pi @ self.vcov_beta for Pi in self.P]
        traces = np.array([ui.trace() for ui in u])
        W = self.W
        A1 = float(traces @ W @ traces)
        A2 = float(sum(W[i, j] * np.sum(u[i] * u[j].T)
                       for i in range(len(u)) for j in range(len(u))))
        B = (A1 + 6.0 * A2) / 2.0
        g = (2.0 * A1 - 5.0 * A2) / (3.0 * A2)
        denominator = 3.0 + 2.0 * (1.0 - g)
        c1, c2, c3 = g / denominator, (1.0 - g) / denominator, (3.0 - g) / denominator
        V0 = 1.0 + c1 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        V1, V2 = 1.0 - c2 * B, 1.0 - c3 * B
        ratio = 1.0 if abs(1.0 - A2) < 1e-14 and abs(V1) < 1e-14 else (1.0 - A2) / V1
        rho = ratio**2 * V0 / V2
        return 4.0 + 3.0 / (rho - 1.0)


def _covariance_parameters(design) -> list:
    """F_i (q × q, sparse) with G_i = Z F_i Z' for each variance and covariance of each
    term's covariance matrix, in lme4's order (term by term, the lower triangle by
    columns): F_i = I_levels ⊗ E_ab in the term's block, E_ab the symmetric indicator of
    entry (a, b)."""
    import scipy.sparse as sp

    out = []
    for t, term in enumerate(design.terms):
        for b in range(term.k):
            for a in range(b, term.k):
                E = np.zeros((term.k, term.k))
                E[a, b] = E[b, a] = 1.0
                blocks = [sp.csr_matrix((other.q, other.q)) for other in design.terms]
                blocks[t] = sp.kron(sp.identity(term.n_levels), E)
                out.append(sp.block_diag(blocks, format="csr"))
    return out


# ---- contrasts ----------------------------------------------------------------------------
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def contrast_matrix(spec, names) -> tuple[list[str], np.ndarray]:
    """(labels, L): the rows λ of the contrasts λ'β that ``spec`` names, over the
    fixed effects ``names``.

    ``spec`` is a string such as ``"Condition[T.C2] - Condition[T.C3]"`` or
    ``"0.5*a + 0.5*b"`` (a sum of optionally weighted coefficient names; a name may be
    written in backticks), a list of such strings, a dict {name: weight}, or an array
    with one row per contrast and one column per fixed effect.
    """
    names = list(names)
    if isinstance(spec, str):
        return [spec.strip()], parse_contrast(spec, names)[None, :]
    if isinstance(spec, dict):
        row = np.zeros(len(names))
        for name, weight in spec.items():
            if name not in names:
                raise ArgumentError(f"unknown fixed effect {name!r} in the contrast; fixed "
                                    f"effects: {names}")
            row[names.index(name)] = float(weight)
        return [_label(row, names)], row[None, :]
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, str) for s in spec):
        return [s.strip() for s in spec], np.array([parse_contrast(s, names) for s in spec])
    try:
        L = np.atleast_2d(np.asarray(spec, dtype=float))
    except (TypeError, ValueError):
        raise ArgumentError(f"a contrast is a string, a list of strings, a dict of weights "
                            f"or a matrix, not {type(spec).__name__}") from None
    if L.ndim != 2 or L.shape[1] != len(names) or L.shape[0] == 0:
        raise ArgumentError(f"a contrast matrix needs one column per fixed effect "
                            f"({len(names)}: {names}), not shape {np.shape(spec)}")
    if not np.all(np.isfinite(L)):
        raise ArgumentError("a contrast matrix must be finite")
    return [_label(row, names) for row in L], L


def expand_contrasts(contrasts, data: pd.DataFrame, names=None) -> tuple:
    """(label, text) pairs: ``pairwise:F`` becomes every pair of F's levels (later minus
    earlier, labelled ``F[b] - F[a]``); any other text is its own label.  Each text is
    read against the fixed effects ``names`` where given, so a misspelt name fails here,
    once."""
    out = []
    for text in contrasts:
        text = text.strip()
        if text.startswith("pairwise:"):
            factor = text[len("pairwise:"):].strip()
            out += pairwise_contrasts(factor, data, names)
        else:
            if names is not None:
                parse_contrast(text, names)
            out.append((text, text))
    labels = [label for label, _ in out]
    if len(set(labels)) < len(labels):
        raise ArgumentError(f"contrasts repeat: {labels}")
    return tuple(out)


def pairwise_contrasts(factor: str, data: pd.DataFrame, names=None) -> list:
    """Every pair of a treatment-coded factor's levels as a contrast of its columns."""
    if factor not in data.columns:
        raise ArgumentError(f"pairwise:{factor}: unknown column {factor!r}; the data has "
                            f"{list(map(str, data.columns))}")
    levels = sorted(map(str, data[factor].dropna().unique()))
    column = {level: f"{factor}[T.{level}]" for level in levels}
    if names is not None:
        present = [level for level in levels if column[level] in names]
        if len(present) != len(levels) - 1 or any(
                name.startswith(f"{factor}[") and ":" in name for name in names):
            raise ArgumentError(f"pairwise:{factor} needs {factor} as a treatment-coded main "
                                f"effect (columns {factor}[T.level], no interactions); the "
                                f"fixed effects are {names}")
        reference = next(level for level in levels if column[level] not in names)
        column[reference] = None
    if len(levels) < 2:
        raise ArgumentError(f"pairwise:{factor}: the column has {len(levels)} level(s)")
    out = []
    for i, first in enumerate(levels):
        for later in levels[i + 1:]:
            parts = [f"`{column[later]}`" if column[later] else "",
                     f"- `{column[first]}`" if column[first] else ""]
            out.append((f"{factor}[{later}] - {factor}[{first}]", " ".join(p for p in parts if p)))
    return out


def _label(row, names) -> str:
    terms = []
    for weight, name in zip(row.tolist(), names):
        if weight:
            sign = "-" if weight < 0 else "+"
            size = "" if abs(weight) == 1 else f"{abs(weight):g}*"
            terms.append(f"{sign} {size}{name}")
    text = " ".join(terms) or "0"
    return text[2:] if text.startswith("+ ") else text


def parse_contrast(text: str, names) -> np.ndarray:
    """λ from a weighted sum of fixed-effect names, e.g. ``"a - b"``, ``"2*a - b - c"``.

    Grammar: ``[±] [number [*]] name`` repeated with ``+`` or ``-`` between terms; a
    name is the longest fixed-effect name at that point, or any name in backticks.
    Nothing is evaluated.
    """
    if not isinstance(text, str):
        raise ArgumentError(f"a contrast must be a string, not {type(text).__name__}")
    names = list(names)
    by_length = sorted(names, key=len, reverse=True)
    row = np.zeros(len(names))
    pos, n, first = 0, len(text), True

    def skip(i):
        while i < n and text[i].isspace():
            i += 1
        return i

    def fail(i, what):
        raise ArgumentError(f"cannot read the contrast {text!r} at position {i + 1}: "
                            f"{what}; fixed effects: {names}")

    pos = skip(pos)
    if pos == n:
        fail(pos, "it is empty")
    while pos < n:
        sign = 1.0
        if text[pos] in "+-":
            sign = -1.0 if text[pos] == "-" else 1.0
            pos = skip(pos + 1)
        elif not first:
            fail(pos, "expected + or - between terms")
        weight = 1.0
        number = _NUMBER.match(text, pos)
        if number and not any(text.startswith(name, pos) for name in by_length):
            weight = float(number.group())
            pos = skip(number.end())
            if pos < n and text[pos] == "*":
                pos = skip(pos + 1)
        if pos < n and text[pos] == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                fail(pos, "unclosed backtick")
            name = text[pos + 1:end]
            if name not in names:
                fail(pos, f"unknown fixed effect {name!r}")
            pos = end + 1
        else:
            name = next((m for m in by_length if text.startswith(m, pos)), None)
            if name is None:
                fail(pos, "expected a fixed-effect name")
            pos += len(name)
        row[names.index(name)] += sign * weight
        first = False
        pos = skip(pos)
    return row
