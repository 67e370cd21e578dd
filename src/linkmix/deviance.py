"""Deviance functions of a linear mixed model over a factorisation engine.

Owns the formulas of DESIGN.md (n observations, p fixed effects):

* ML profiled deviance   d(θ)   = log|L_θ|² + n[1 + log(2π r²(θ)/n)]
* REML criterion         d_R(θ) = log|L_θ|² + log|R_X|² + (n−p)[1 + log(2π r²(θ)/(n−p))]
* full deviance          D(θ, β, σ) = n log(2πσ²) + r²(θ, β)/σ² + log|L_θ|²
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Deviance"]

_LOG_2PI = math.log(2.0 * math.pi)


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
            dof = self.n - self.p
            return eng.logdet_L + eng.logdet_RX() + dof * (1.0 + math.log(2.0 * math.pi * r2 / dof))
        return eng.logdet_L + self.n * (1.0 + math.log(2.0 * math.pi * r2 / self.n))

    def full(self, theta, beta, sigma) -> float:
        """−2 log L at (θ, β, σ), nothing profiled."""
        self.n_evaluations += 1
        if not self.engine.update(theta):
            return math.inf
        eng = self.engine
        r2 = eng.prss(beta)
        return self.n * (_LOG_2PI + 2.0 * math.log(sigma)) + r2 / sigma**2 + eng.logdet_L

    def sigma_hat(self) -> float:
        """σ̂ = sqrt(r²/(n − p)) for REML, sqrt(r²/n) for ML, at the current factor."""
        dof = self.n - self.p if self.REML else self.n
        return math.sqrt(self.engine.prss() / dof)
