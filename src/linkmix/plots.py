"""Plots people expect: volcano (many groups), profile likelihood and caterpillar (one fit),
trace, pair and marginal-density plots of posterior draws.

Owns drawing only; the numbers come from ``fit_groups`` tables and fit results.
matplotlib is an optional dependency (``pip install 'linkmix[plots]'``); figures
are made without pyplot, so no display is needed.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

from .errors import LinkmixError
from .inference import benjamini_hochberg
from .linked import LinkedModel

__all__ = ["volcano", "profile", "caterpillar", "trace", "pair", "posterior_density",
           "benjamini_hochberg"]


def _canvas(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise LinkmixError("plots need matplotlib: pip install 'linkmix[plots]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def _figure(width=6.0, height=4.5):
    fig = _canvas(width, height)
    return fig, fig.add_subplot()


def volcano(results: pd.DataFrame, effect: str, *, fdr: float = 0.05, label=None):
    """Volcano plot of one parameter or contrast across groups: estimate against −log10 p.

    The p values are the table's t tests (``p_value``, by the ddf of the fit); a table
    without them (written by linkmix before 0.3) falls back to Wald z tests.

    Parameters
    ----------
    results : DataFrame from ``fit_groups``
    effect : str
        A name of the ``parameter`` column: a fixed effect (``"m2"``) or a contrast
        (``fit_groups(..., contrasts=...)``).
    fdr : float
        Groups whose Benjamini–Hochberg adjusted p (``p_adjusted``, across the groups
        for this effect) is below this are highlighted.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = results[(results["parameter"] == effect) & results["std_error"].notna()]
    if rows.empty:
        known = sorted(results["parameter"].dropna().unique())
        raise LinkmixError(f"no estimates with standard errors for {effect!r}; parameters: "
                           f"{known}")
    if "p_value" in rows and rows["p_value"].notna().any():
        p = rows["p_value"].to_numpy(dtype=float)
        kind = "t"
    else:
        from scipy.special import ndtr

        p = 2.0 * ndtr(-np.abs(rows["estimate"].to_numpy() / rows["std_error"].to_numpy()))
        kind = "Wald"
    q = rows["p_adjusted"].to_numpy(dtype=float) if "p_adjusted" in rows \
        and rows["p_adjusted"].notna().any() else benjamini_hochberg(p)
    with np.errstate(divide="ignore"):
        y = -np.log10(np.maximum(p, np.finfo(float).tiny))
    fig, ax = _figure()
    significant = q < fdr
    estimate = rows["estimate"].to_numpy()
    ax.scatter(estimate[~significant], y[~significant], s=9, c="0.6", label=f"q ≥ {fdr:g}")
    ax.scatter(estimate[significant], y[significant], s=12, c="tab:red",
               label=f"q < {fdr:g} (BH)")
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel(f"estimate of {effect}")
    ax.set_ylabel(f"−log10 p ({kind})")
    ax.set_title(label or f"{effect}: {int(significant.sum())} of {len(rows)} groups at FDR "
                 f"{fdr:g}")
    ax.legend(frameon=False, loc="best")
    return fig


def profile(fit, parameter: str, *, grid=None, points: int = 15, width: float = 3.0):
    """Profile likelihood of one named parameter of a maximum-likelihood fit.

    Each point refits the model with the constraint ``parameter == value`` (the
    linked-model machinery), so it works for plain, constrained and linked fits,
    linear or nonlinear.
    The dashed line is the χ²₁ 95% cut-off of the likelihood-ratio statistic.

    Returns
    -------
    (matplotlib.figure.Figure, pandas.DataFrame of value and statistic)
    """
    if getattr(fit, "REML", False):
        raise LinkmixError("profile likelihoods need a maximum-likelihood fit (REML=False)")
    params = fit.params
    if parameter not in params.index:
        raise LinkmixError(f"unknown parameter {parameter!r}; parameters: {list(params.index)}")
    estimate, se = params.loc[parameter, ["estimate", "std_error"]]
    if grid is None:
        spread = se if np.isfinite(se) and se > 0 else max(abs(estimate) * 0.2, 0.1)
        grid = np.linspace(estimate - width * spread, estimate + width * spread, points)
        if params.loc[parameter, "kind"] == "sd":
            grid = grid[grid > 0]
    quoted = parameter if parameter.isidentifier() else f"`{parameter}`"
    values = []
    for value in grid:
        refit = LinkedModel.from_model(fit.model, constraints=f"{quoted} == {float(value)!r}")
        values.append(refit.fit(derivatives=False).objective - fit.objective)
    table = pd.DataFrame({"value": grid, "statistic": np.maximum(values, 0.0)})
    fig, ax = _figure()
    ax.plot(table["value"], table["statistic"], "o-", ms=3)
    ax.axhline(3.841, color="0.4", ls="--", lw=0.8)
    ax.axvline(estimate, color="0.3", lw=0.8)
    ax.set_xlabel(parameter)
    ax.set_ylabel("−2 Δ log L")
    ax.set_title(f"profile likelihood of {parameter}")
    return fig, table


def caterpillar(fit, group: str | None = None, *, level: float = 0.95):
    """Conditional modes of one grouping factor's random effects with intervals
    from their conditional variances σ²·Λ(Λ'Z'ZΛ + I)⁻¹Λ' (dense; up to 2,000
    random effects), levels sorted by the first coefficient.

    Returns
    -------
    matplotlib.figure.Figure
    """
    tables = fit.ranef()
    group = group or next(iter(tables))
    if group not in tables:
        raise LinkmixError(f"unknown grouping factor {group!r}; factors: {list(tables)}")
    table = tables[group]
    design = fit.design
    se = None
    if design.q <= 2000:
        ZL = design.Z_sparse().toarray() @ design.Lambda_sparse(fit.theta).toarray()
        L = design.Lambda_sparse(fit.theta).toarray()
        cov = fit.sigma**2 * L @ np.linalg.solve(ZL.T @ ZL + np.eye(design.q), L.T)
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        columns = {}
        for term, block in zip(design.terms, design.by_term(sd)):
            if term.group == group:
                for c, name in enumerate(term.coef_names):
                    columns[name] = block[:, c]
        se = pd.DataFrame(columns, index=table.index)[table.columns]
    z = NormalDist().inv_cdf(0.5 + level / 2)
    k = table.shape[1]
    fig = _figure(3.2 * k, max(3.0, 0.18 * len(table) + 1))[0]
    fig.clear()
    order = table.iloc[:, 0].sort_values().index
    axes = fig.subplots(1, k, sharey=True, squeeze=False)[0]
    pos = np.arange(len(order))
    for ax, name in zip(axes, table.columns):
        values = table.loc[order, name].to_numpy()
        err = z * se.loc[order, name].to_numpy() if se is not None else None
        ax.errorbar(values, pos, xerr=err, fmt="o", ms=3, lw=0.8, capsize=0)
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_xlabel(name)
    axes[0].set_yticks(pos, [str(v) for v in order], fontsize=7)
    fig.suptitle(f"conditional modes: {group}")
    return fig


def _posterior_variables(idata, var_names):
    """The named parameters of a posterior (random effects' draws left out unless asked
    for), each as draws of shape chain × draw."""
    posterior = idata.posterior
    names = ([name for name in posterior.data_vars if posterior[name].ndim == 2]
             if var_names is None else list(var_names))
    unknown = [name for name in names if name not in posterior.data_vars]
    if unknown:
        raise LinkmixError(f"unknown posterior variables {unknown}; the posterior has "
                           f"{list(posterior.data_vars)}")
    if not names:
        raise LinkmixError("no posterior variables to plot")
    return names, [np.asarray(posterior[name]).reshape(posterior.sizes["chain"], -1)
                   for name in names]


def trace(idata, var_names=None, *, max_chains: int = 16):
    """Trace plot of posterior draws: per parameter, the marginal histogram (every chain
    pooled) and the draws against iteration (``max_chains`` chains drawn; with emcee's
    ensemble every walker is a chain).

    Returns
    -------
    matplotlib.figure.Figure
    """
    names, draws = _posterior_variables(idata, var_names)
    fig = _canvas(9.0, 1.8 * len(names))
    axes = fig.subplots(len(names), 2, squeeze=False, width_ratios=[1, 2])
    for (left, right), name, values in zip(axes, names, draws):
        left.hist(values.ravel(), bins=60, density=True, color="C0", alpha=0.8)
        left.set_ylabel(name, fontsize=8)
        left.set_yticks([])
        for chain in values[:max_chains]:
            right.plot(chain, lw=0.4, alpha=0.6)
    axes[-1, 1].set_xlabel("draw")
    return fig


def pair(idata, var_names=None, *, max_points: int = 4000, seed: int = 0):
    """Pair plot: histograms on the diagonal, scatter plots of (a random ``max_points``
    of) the pooled draws below it.

    Returns
    -------
    matplotlib.figure.Figure
    """
    names, draws = _posterior_variables(idata, var_names)
    pooled = np.column_stack([values.ravel() for values in draws])
    if len(pooled) > max_points:
        pooled = pooled[np.random.default_rng(seed).choice(len(pooled), max_points,
                                                           replace=False)]
    k = len(names)
    fig = _canvas(2.0 * k + 1, 2.0 * k + 1)
    axes = fig.subplots(k, k, squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
            elif i == j:
                ax.hist(pooled[:, i], bins=50, color="C0", alpha=0.8)
                ax.set_yticks([])
            else:
                ax.plot(pooled[:, j], pooled[:, i], ".", ms=1, alpha=0.3, color="C0")
            if i == k - 1:
                ax.set_xlabel(names[j], fontsize=7)
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=7)
    return fig


def posterior_density(idata, parameter: str, fit=None, *, log: bool = False,
                      bins: int = 120):
    """The marginal posterior density of one parameter, with the maximum-likelihood
    optima of ``fit`` marked (every equally likely optimum of a linked fit: the modes a
    non-identifying constraint leaves).  ``log`` puts the parameter on a log axis (a
    positive parameter whose modes span decades, such as the seed's c₂), showing the
    density of its log10.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _, (values,) = _posterior_variables(idata, [parameter])
    values = values.ravel()
    if log and np.any(values <= 0):
        raise LinkmixError(f"{parameter} has draws ≤ 0: it cannot be shown on a log axis")
    shown = np.log10(values) if log else values
    heights, edges = np.histogram(shown, bins=bins, density=True)
    fig, ax = _figure()
    # on a log axis the bars are the density of log10(parameter): equal areas, equal mass
    ax.stairs(heights, 10.0 ** edges if log else edges, fill=True, color="C0", alpha=0.75,
              label="posterior")
    if fit is not None:
        optima = getattr(fit, "equally_likely", None)
        marks = ([o.params[parameter] for o in optima] if optima
                 else [float(fit.params.loc[parameter, "estimate"])])
        for k, mark in enumerate(marks):
            ax.axvline(mark, color="C3", ls="--", lw=1.2,
                       label="maximum-likelihood optima" if k == 0 else None)
        ax.legend(frameon=False)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(parameter)
    ax.set_ylabel(f"density of log10({parameter})" if log else "density")
    ax.set_title(f"marginal posterior of {parameter}")
    return fig
