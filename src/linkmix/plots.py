"""Plots people expect: volcano (many groups), profile likelihood and caterpillar (one fit).

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

__all__ = ["volcano", "profile", "caterpillar", "benjamini_hochberg"]


def _figure(width=6.0, height=4.5):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise LinkmixError("plots need matplotlib: pip install 'linkmix[plots]'") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def volcano(results: pd.DataFrame, effect: str, *, fdr: float = 0.05, label=None):
    """Volcano plot of one parameter or contrast across groups: estimate against −log10 p.

    Parameters
    ----------
    results : DataFrame from ``fit_groups``
    effect : str
        A name of the ``parameter`` column: a fixed effect (``"m2"``) or a contrast
        (``fit_groups(..., contrasts=...)``).
    fdr : float
        Groups whose Benjamini–Hochberg adjusted p (``p_adjusted``, across the groups
        for this effect) is below this are highlighted.

    The p values are the table's t tests (``p_value``, by the ddf of the fit); a table
    without them (written by linkmix before 0.3) falls back to Wald z tests.

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
    params = fit.params.set_index("name")
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
