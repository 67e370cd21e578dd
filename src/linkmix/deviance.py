"""The likelihood of a mixed model from its PLS state, and the deviance of a linear one.

Owns the formulas of DESIGN.md, written once for every model (n observations, p
fixed effects; r² the penalised residual sum of squares, log|L|² and log|R_X|² from
the factorisation; for a nonlinear model r² and L come from PNLS at ũ):

* ML profiled deviance   d(θ)   = log|L_θ|² + n[1 + log(2π r²(θ)/n)]   (nlmer's Laplace
  deviance when r² and L are PNLS's)
* REML criterion         d_R(θ) = log|L_θ|² + log|R_X|² + (n−p)[1 + log(2π r²(θ)/(n−p))]
* full deviance          D(θ, β, σ) = n log(2πσ²) + r²(θ, β)/σ² + log|L_θ|²
* σ̂ = sqrt(r²/n) (ML) or sqrt(r²/(n − p)) (REML)

``Deviance`` evaluates them over a linear model's engine; linked and nonlinear
models call the functions with their own r² and log|L|².
"""

from __future__ import annotations

import math

__all__ = ["Deviance", "LOG_2PI", "profiled_deviance", "full_deviance", "sigma_hat"]

LOG_2PI = math.log(2.0 * math.pi)


def profiled_deviance(logdet_L: float, r2: float, n: int, p: int = 0, logdet_RX: float = 0.0,
                      REML: bool = False) -> float:
    """ML deviance log|L|² + n[1 + log(2π r²/n)] with σ profiled, or (``REML``) the REML
    criterion log|L|² + log|R_X|² + (n−p)[1 + log(2π r²/(n−p))]."""
    if REML:
        dof = n - p
        return logdet_L + logdet_RX + dof * (1.0 + math.log(2.0 * math.pi * r2 / dof))
    return logdet_L + n * (1.0 + math.log(2.0 * math.pi * r2 / n))


def full_deviance(logdet_L: float, r2: float, n: int, sigma: float) -> float:
    """−2 log L = n log(2πσ²) + r²/σ² + log|L|², nothing profiled."""
    return n * (LOG_2PI + 2.0 * math.log(sigma)) + r2 / sigma**2 + logdet_L


def sigma_hat(r2: float, n: int, p: int = 0, REML: bool = False) -> float:
    """The σ that maximises the (restricted) likelihood: sqrt(r²/(n − p)) for REML,
    sqrt(r²/n) for ML."""
    return math.sqrt(r2 / (n - p if REML else n))


class Deviance:
    """Callable deviance of one model: ``dev(theta)`` is profiled ML or REML.

    Parameters
    ----------
    engine : BlockedEngine or CholmodEngine
        Factorisation of the model's augmented PLS system.
    REML : bool
        Whether ``__call__`` returns the REML criterion instead of the ML deviance.
    """

    def __init__(self, engine, REML: bool):
        self.engine = engine
        self.REML = bool(REML)
        self.n = engine.design.n
        self.p = engine.design.p
        self.n_evaluations = 0

    def __call__(self, theta) -> float:
        """Profiled objective at θ (``inf`` where the system is not positive definite)."""
        self.n_evaluations += 1
        eng = self.engine
        if not eng.update(theta):
            return math.inf
        r2 = eng.prss()
        if r2 <= 0.0:
            return -math.inf
        if self.REML:
            return profiled_deviance(eng.logdet_L, r2, self.n, self.p, eng.logdet_RX(), True)
        return profiled_deviance(eng.logdet_L, r2, self.n)

    def full(self, theta, beta, sigma) -> float:
        """−2 log L at (θ, β, σ), nothing profiled."""
        self.n_evaluations += 1
        if not self.engine.update(theta):
            return math.inf
        return full_deviance(self.engine.logdet_L, self.engine.prss(beta), self.n, sigma)

    def sigma_hat(self) -> float:
        """σ̂ = sqrt(r²/(n − p)) for REML, sqrt(r²/n) for ML, at the current factor."""
        return sigma_hat(self.engine.prss(), self.n, self.p, self.REML)
