"""Nothing a fit reports depends on units: df and p of Satterthwaite and Kenward-Roger
tests, estimates and the singular call are the same (to 1e-6 relative) when y is
multiplied by 1e6 or 1e-6 and when a covariate is rescaled or moved, for plain, linked
and batch fits.  A contrast is compared with the same quantity in the moved fit: with
X₀ = X·S (S from least squares), β₀ = S⁻¹β, so λ'β₀ is the contrast λ'S⁻¹ of the move.

lmerTest fails these (df of 1e15 where 160 are right, with y in micro-units): the
comparison is with linkmix's own fit in natural units, whose df match lmerTest's
(``test_inference``)."""

import numpy as np
import pandas as pd
import pytest

import linkmix

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: The bar: df and p of the same contrast agree to this, relative, whatever the units.
INVARIANT = 1e-6
MOVES = {"y*1e6": ("y", 1e6, 0.0), "y*1e-6": ("y", 1e-6, 0.0), "x1*1e4": ("x1", 1e4, 0.0),
         "x1*1e-4": ("x1", 1e-4, 0.0), "x1+1e3": ("x1", 1.0, 1e3), "x2*1e5+7": ("x2", 1e5, 7.0)}


def simulate(seed: int, missing: float = 0.05) -> pd.DataFrame:
    """Crossed (g1, g2) and nested (a/b) groups of unequal sizes, a random slope on x1,
    a three-level factor, and missing responses."""
    rng = np.random.default_rng(seed)
    n_g1, n_g2, n_a = rng.integers(6, 14), rng.integers(4, 9), rng.integers(4, 8)
    n = int(rng.integers(60, 160))
    g1, g2 = rng.integers(0, n_g1, n), rng.integers(0, n_g2, n)
    a, b = rng.integers(0, n_a, n), rng.integers(0, 3, n)
    x1 = rng.normal(size=n) * rng.uniform(0.5, 3)
    x2 = rng.uniform(0, 5, n)
    f = rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2])
    u1, s1 = rng.normal(size=n_g1) * rng.uniform(0.2, 2), rng.normal(size=n_g1) * rng.uniform(0, 1)
    u2, ua = rng.normal(size=n_g2) * rng.uniform(0, 1.5), rng.normal(size=n_a)
    uab = rng.normal(size=(n_a, 3)) * 0.7
    y = (10 + 0.5 * x1 - 0.3 * x2 + (f == "B") * 0.8 + u1[g1] + s1[g1] * x1 + u2[g2] + ua[a]
         + uab[a, b] + rng.normal(size=n) * rng.uniform(0.5, 2))
    data = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "f": f, "g1": [f"s{i}" for i in g1],
                         "g2": [f"t{i}" for i in g2], "a": [f"a{i}" for i in a],
                         "b": [f"b{i}" for i in b]})
    data.loc[rng.random(n) < missing, "y"] = np.nan
    return data


def moved(data, move):
    column, scale, shift = MOVES[move]
    out = data.copy()
    out[column] = out[column] * scale + shift
    return out


def assert_same_tests(fit, other, ddf):
    """The tests of fit's coefficients, and of the same contrasts in ``other``."""
    S = np.linalg.lstsq(other.design.X, fit.design.X, rcond=None)[0]   # X₀ = X·S
    ours = fit.coef_table(ddf)
    theirs = other.contrast(np.linalg.inv(S), ddf)
    np.testing.assert_allclose(theirs["df"], ours["df"], rtol=INVARIANT, err_msg=ddf)
    np.testing.assert_allclose(theirs["p_value"], ours["p_value"], rtol=INVARIANT, err_msg=ddf)
    np.testing.assert_allclose(theirs["t_value"], ours["t_value"], rtol=INVARIANT, err_msg=ddf)


PLAIN = ["y ~ x1 + x2 + (1|g1)", "y ~ x1 + f + (1|g1) + (1|g2)", "y ~ x1 + x2 + (x1|g1)",
         "y ~ x1 + x2 + (1|a/b)", "y ~ x1*f + (1|g1) + (1|g2)", "y ~ x1 + x2 + (x1||g1) + (1|g2)"]


@pytest.mark.parametrize("REML", [True, False])
@pytest.mark.parametrize("formula", PLAIN)
@pytest.mark.parametrize("seed", [0, 1, 13])
def test_plain_fits_tests_do_not_depend_on_units(seed, formula, REML):
    data = simulate(seed)
    fit = linkmix.lmer(formula, data, REML=REML)
    for move in MOVES:
        if MOVES[move][2] and "||" in formula:
            continue  # independent intercept and slope: a shift changes the model
        other = linkmix.lmer(formula, moved(data, move), REML=REML)
        assert other.singular == fit.singular, move
        for ddf in ("satterthwaite", "kenward-roger") if REML else ("satterthwaite",):
            assert_same_tests(fit, other, ddf)


def test_satterthwaite_keeps_sigmas_direction_in_micro_units(sleepstudy):
    """The case the issue found: with y·1e6 an absolute eigenvalue cut dropped σ's
    direction (its curvature is 2m/σ²) and x2's df came out as 1.9e15, not 160."""
    data = sleepstudy.assign(x2=np.random.default_rng(3).normal(size=len(sleepstudy)))
    natural = linkmix.lmer("Reaction ~ Days + x2 + (1 | Subject)", data)
    micro = linkmix.lmer("Reaction ~ Days + x2 + (1 | Subject)",
                         data.assign(Reaction=data.Reaction * 1e6))
    assert natural.coef_table().loc["Days", "df"] == pytest.approx(160.0, rel=1e-4)
    assert_same_tests(natural, micro, "satterthwaite")


LINKED = [("y ~ x1 + x2 + (1|g1)", {"constraints": "{c1}*x1 == -2*x2*{c2}"}),
          ("y ~ x1 + x2 + (1|g1) + (1|g2)",
           {"constraints": "`sd[(Intercept)|g1]` == 1.5*`sd[(Intercept)|g2]`"}),
          ("y ~ x1 + x2 + (x1|g1)", {"constraints": "{c1}*x1 == 3*`sd[(Intercept)|g1]`"}),
          ("y ~ x2 + (1|g1)", {"mean": "{c1}*x1*`(Intercept)`/10"})]


@pytest.mark.parametrize("formula, links", LINKED)
@pytest.mark.parametrize("seed", [0, 2])
def test_linked_fits_tests_do_not_depend_on_units(seed, formula, links):
    """Constraints and means are written for each move's units (β of x1·c is β/c)."""
    data = simulate(seed)

    def fit_in(move):
        column, scale, _ = MOVES[move] if move else ("y", 1.0, 0.0)
        c1 = scale if column == "x1" else 1.0
        c2 = scale if column == "x2" else 1.0
        options = {key: text.format(c1=c1 if key == "constraints" else 1 / c1, c2=c2)
                   for key, text in links.items()}
        return linkmix.lmer(formula, moved(data, move) if move else data, **options)

    fit = fit_in(None)
    for move in ("y*1e6", "y*1e-6", "x1*1e4"):
        other = fit_in(move)
        assert other.converged and other.verdict == fit.verdict, move
        np.testing.assert_allclose(other.coef_table()["df"], fit.coef_table()["df"],
                                   rtol=INVARIANT, err_msg=move)
        np.testing.assert_allclose(other.coef_table()["t_value"], fit.coef_table()["t_value"],
                                   rtol=INVARIANT, err_msg=move)


def msstats_like(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for protein in range(25):
        for condition in ("C1", "C2", "C3"):
            for subject in range(int(rng.integers(3, 6))):
                for feature in range(int(rng.integers(1, 4))):
                    if rng.random() < 0.1:
                        continue
                    rows.append({"Protein": f"P{protein}", "Condition": condition,
                                 "BioReplicate": f"{condition}_{subject}",
                                 "log2I": 20 + (condition == "C2") * 0.5
                                 + rng.normal() * 0.3 + rng.normal() * 0.2})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("options", [{}, {"ddf": "kenward-roger"}, {"REML": False},
                                     {"constraints": "`Condition[T.C3]` == "
                                                     "0.5*`Condition[T.C2]`"}])
def test_batch_rows_do_not_depend_on_units(options):
    data = msstats_like()

    def rows(frame):
        table = linkmix.fit_groups(frame, "Protein", "log2I ~ Condition + (1|BioReplicate)",
                                   n_jobs=1, progress=False, **options)
        return table[table.kind == "fixef"].reset_index(drop=True)

    base = rows(data)
    assert base["df"].notna().all()
    for scale in (1e6, 1e-6):
        other = rows(data.assign(log2I=data.log2I * scale))
        np.testing.assert_allclose(other["df"], base["df"], rtol=INVARIANT)
        np.testing.assert_allclose(other["p_value"], base["p_value"], rtol=1e-5)
        assert (other["singular"] == base["singular"]).all()
        assert (other["converged"] == base["converged"]).all()
