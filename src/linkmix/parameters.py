"""The parameter namespace: optimiser vectors ↔ named parameters on their natural scale.

Owns the names every other stage uses (results, constraints, start values, the
CLI, JSON):

* fixed effects: the design column name, e.g. ``(Intercept)``, ``Days``, ``Sex[T.Female]``;
* ``sd[<coef>|<group>]``: standard deviation of a random coefficient, σ·sqrt((TT')_jj);
* ``cor[<coef1>,<coef2>|<group>]``: correlation of two random coefficients, from TT';
* ``sigma``: the residual standard deviation.

In constraint and mean expressions a name that is not a plain identifier is
written in backticks: ```sd[Days|Subject]```.

The optimiser of a linked model works on ``z = (θ, β, log σ)``, or, when the space
has working coordinates (``linkmix.conditioning.LinkedCoordinates``), on
``z = (θ_w, γ, log(σ/s))`` with lme4's θ, β = Mγ and σ recovered from them (s the
response's scale, so that no coordinate of z depends on the data's units);
``ParameterSpace`` maps ``z`` to the natural vector (fixed effects, then per term
the SDs and the correlations, then ``sigma``) and differentiates that map.
"""

from __future__ import annotations

import numpy as np

from .numdiff import jacobian

__all__ = ["sd_name", "cor_name", "ParameterSpace", "SIGMA"]

SIGMA = "sigma"


def sd_name(coef: str, group: str) -> str:
    """Name of the SD of random coefficient ``coef`` of grouping factor ``group``."""
    return f"sd[{coef}|{group}]"


def cor_name(coef1: str, coef2: str, group: str) -> str:
    """Name of the correlation of random coefficients ``coef1`` and ``coef2``."""
    return f"cor[{coef1},{coef2}|{group}]"


def variance_components(terms, T_blocks, sigma):
    """Per term: (group, coefficient names, SDs, correlation matrix) from σ²TT'."""
    out = []
    for term, T in zip(terms, T_blocks):
        cov = sigma**2 * (T @ T.T)
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        out.append((term.group, term.coef_names, sd, corr))
    return out


class ParameterSpace:
    """Names and natural values of a linear mixed model's parameters.

    Parameters
    ----------
    design : LMMDesign
    coordinates : LinkedCoordinates, optional
        The working coordinates z is expressed in (default: lme4's θ and β).
    """

    def __init__(self, design, coordinates=None):
        self.design = design
        self.coordinates = coordinates
        self.fixed_names = list(design.fixed_names)
        self.p = design.p
        self.theta_lower = design.theta_lower
        self.n_theta = len(self.theta_lower)
        names, kinds, groups, terms = [], [], [], []
        for name in self.fixed_names:
            names.append(name), kinds.append("fixef"), groups.append(None), terms.append(name)
        for term in design.terms:
            for coef in term.coef_names:
                names.append(sd_name(coef, term.group)), kinds.append("sd")
                groups.append(term.group), terms.append(coef)
            for j in range(term.k):
                for i in range(j + 1, term.k):
                    a, b = term.coef_names[j], term.coef_names[i]
                    names.append(cor_name(a, b, term.group)), kinds.append("cor")
                    groups.append(term.group), terms.append(f"{a},{b}")
        names.append(SIGMA), kinds.append("sigma"), groups.append(None), terms.append(None)
        self.names, self.kinds, self.groups, self.terms = names, kinds, groups, terms
        self.scalar_terms = all(term.k == 1 for term in design.terms)
        self.index = {name: i for i, name in enumerate(names)}
        self.rebind(design)

    def rebind(self, design) -> None:
        """Use ``design`` (same layout, another response): the bounds of log σ follow y."""
        self.design = design
        self._z_bounds = None  # made when first asked: only linked models' optimisers use them

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self._z_bounds is None:
            low, high = self.log_sigma_bounds
            self._z_bounds = (
                np.concatenate([self.theta_lower, np.full(self.p, -np.inf), [low]]),
                np.concatenate([np.full(self.n_theta + self.p, np.inf), [high]]))
        return self._z_bounds

    # ---- z = (θ, β, log σ) --------------------------------------------------
    @property
    def dim_z(self) -> int:
        return self.n_theta + self.p + 1

    @property
    def sigma_unit(self) -> float:
        """s in z's last coordinate log(σ/s): the working coordinates' response scale (1
        without them)."""
        return 1.0 if self.coordinates is None else self.coordinates.response_scale

    def split(self, z):
        """z's three parts: θ (θ_w with working coordinates), β (γ), σ."""
        z = np.asarray(z, dtype=float)
        nt, p = self.n_theta, self.p
        return z[:nt], z[nt:nt + p], self.sigma_unit * np.exp(z[nt + p])

    def join(self, theta, beta, sigma) -> np.ndarray:
        """z from its three parts (in z's own coordinates)."""
        return np.concatenate([np.asarray(theta, float), np.asarray(beta, float),
                               [np.log(sigma / self.sigma_unit)]])

    def user(self, z):
        """lme4's θ, β and σ at z."""
        theta, beta, sigma = self.split(z)
        c = self.coordinates
        if c is None:
            return theta, beta, sigma
        return c.theta(theta), c.beta(beta), sigma

    def from_user(self, theta, beta, sigma) -> np.ndarray:
        """z at lme4's θ, β and σ."""
        c = self.coordinates
        if c is None:
            return self.join(theta, beta, sigma)
        return self.join(c.theta_working(theta), c.gamma(beta), sigma)

    def z_lower(self) -> np.ndarray:
        """Lower bounds of z: 0 on diagonal θ entries, -inf elsewhere, and for log σ
        ``log_sigma_bounds[0]``."""
        return self._bounds()[0]

    def z_upper(self) -> np.ndarray:
        """Upper bounds of z: none, but for log σ ``log_sigma_bounds[1]``."""
        return self._bounds()[1]

    @property
    def log_sigma_bounds(self) -> tuple[float, float]:
        """z's last coordinate within [log(sd/s) − 20, log(sd/s) + 5], sd the response's
        SD: keeps optimiser steps from overflowing without excluding any sensible fit."""
        y = self.design.y
        scale = float(np.std(y)) if len(y) > 1 and np.std(y) > 0 else 1.0
        centre = np.log(scale / self.sigma_unit)
        return (centre - 20.0, centre + 5.0)

    def z_names(self) -> list[str]:
        return ([f"theta[{i}]" for i in range(self.n_theta)] + self.fixed_names
                + ["log(sigma)" if self.coordinates is None else "log(sigma/s)"])

    # ---- natural scale ------------------------------------------------------
    def natural(self, theta, beta, sigma) -> np.ndarray:
        """The natural-scale vector, in ``names`` order."""
        if self.scalar_terms:  # every term has one coefficient: sd = σ|θ|, no correlations
            return np.concatenate([beta, sigma * np.abs(theta), [sigma]])
        values = list(np.asarray(beta, dtype=float))
        for _, _, sd, corr in variance_components(self.design.terms,
                                                  self.design.T_blocks(theta), sigma):
            values.extend(sd)
            k = len(sd)
            values.extend(corr[i, j] for j in range(k) for i in range(j + 1, k))
        values.append(sigma)
        return np.array(values)

    def from_natural_jacobian(self, natural, theta=None) -> np.ndarray:
        """∂(θ, β, σ)/∂natural of ``from_natural``: in closed form for terms of one or two
        coefficients (θ = sd/σ; θ = (sd₁, ρ·sd₂, sd₂√(1 − ρ²))/σ), by central differences
        for larger ones.  ``theta``: ``from_natural(natural)[0]`` if already known."""
        natural = np.asarray(natural, dtype=float)
        p, sigma = self.p, float(natural[-1])
        J = np.zeros((self.n_theta + p + 1, len(natural)))
        J[self.n_theta:self.n_theta + p, :p] = np.eye(p)
        J[-1, -1] = 1.0
        theta = self.from_natural(natural)[0] if theta is None else theta
        J[:self.n_theta, -1] = -theta / sigma          # θ = T(sd, ρ)/σ
        row, k0 = 0, p
        for term in self.design.terms:
            k = term.k
            n_params, n_theta = k + k * (k - 1) // 2, k * (k + 1) // 2
            if k == 1:
                J[row, k0] = 1.0 / sigma
            elif k == 2:
                sd1, sd2, rho = natural[k0:k0 + 3]
                root = np.sqrt(max(1.0 - rho * rho, 0.0))
                J[row, k0] = 1.0 / sigma
                J[row + 1, k0 + 1], J[row + 1, k0 + 2] = rho / sigma, sd2 / sigma
                J[row + 2, k0 + 1] = root / sigma
                J[row + 2, k0 + 2] = -sd2 * rho / (root * sigma) if root > 0 else 0.0
            else:
                for j in range(k0, k0 + n_params):
                    h = 1e-7 * max(1.0, abs(natural[j]))
                    up, down = natural.copy(), natural.copy()
                    up[j] += h
                    down[j] -= h
                    a, b = self.from_natural(up), self.from_natural(down)
                    if a is not None and b is not None:
                        J[row:row + n_theta, j] = (a[0] - b[0])[row:row + n_theta] / (2 * h)
            row += n_theta
            k0 += n_params
        return J

    def natural_from_z(self, z) -> np.ndarray:
        return self.natural(*self.user(z))

    def from_natural(self, natural):
        """lme4's (θ, β, σ) from a natural vector, the inverse of ``natural``: per term
        T = chol(Σ)/σ with Σ = D R D from the SDs (D) and correlations (R); ``None``
        where some R is not positive definite or an SD or σ is not positive."""
        natural = np.asarray(natural, dtype=float)
        p = self.p
        beta, sigma = natural[:p], float(natural[-1])
        if not sigma > 0:
            return None
        theta, k0 = [], p
        for term in self.design.terms:
            k = term.k
            sd = natural[k0:k0 + k]
            if np.any(sd < 0):
                return None
            if k == 1:
                theta.append(sd[0] / sigma)
                k0 += 1
                continue
            if k == 2:   # in closed form: |ρ| = 1 (tanh's rounding far out) stays a factor
                rho = natural[k0 + 2]
                if not abs(rho) <= 1.0:
                    return None
                theta.extend([sd[0] / sigma, rho * sd[1] / sigma,
                              sd[1] * np.sqrt(1.0 - rho * rho) / sigma])
                k0 += 3
                continue
            R = np.eye(k)
            position = k0 + k
            for j in range(k):
                for i in range(j + 1, k):
                    R[i, j] = R[j, i] = natural[position]
                    position += 1
            try:
                C = np.linalg.cholesky(R)
            except np.linalg.LinAlgError:
                return None
            T = (sd[:, None] * C) / sigma
            theta.extend(T[i, j] for i, j in term.theta_positions())
            k0 = position
        return np.array(theta), beta, sigma

    @property
    def sd_factor(self) -> np.ndarray:
        """Scalar terms: b_k in sd_k = σ·b_k·|z_k| (1 without working coordinates)."""
        if self.coordinates is None:
            return np.ones(self.n_theta)
        return self.coordinates.sd_factor

    def natural_jacobian(self, z, step: float = 1e-6) -> np.ndarray:
        """∂ natural / ∂z: exact for scalar terms (sd_k = σ·b_k·|z_k|, β = Mγ), else by
        finite differences (the map is cheap, and smooth off T = 0)."""
        z = np.asarray(z, dtype=float)
        if self.scalar_terms:
            theta, _, sigma = self.split(z)
            nt, p = self.n_theta, self.p
            factor = self.sd_factor
            J = np.zeros((len(self.names), len(z)))
            J[:p, nt:nt + p] = np.eye(p) if self.coordinates is None else self.coordinates.M
            J[p:p + nt, :nt] = np.diag(sigma * factor * np.where(theta < 0, -1.0, 1.0))
            J[p:p + nt, -1] = sigma * factor * np.abs(theta)
            J[-1, -1] = sigma
            return J
        return jacobian(self.natural_from_z, z, lower=self.z_lower(), rel_step=step)

    def as_dict(self, natural) -> dict:
        return {name: float(v) for name, v in zip(self.names, natural)}
