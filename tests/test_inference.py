"""t tests of fixed effects and contrasts against lmerTest (Satterthwaite) and pbkrtest
(Kenward-Roger): tests/data/lmertest_ddf.json, from make_lmertest_ddf.R."""

import json

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix import examples, numdiff
from linkmix.errors import ArgumentError
from linkmix.inference import Satterthwaite, contrast_matrix, parse_contrast, t_pvalues

from conftest import DATA

LMERTEST = json.loads((DATA / "lmertest_ddf.json").read_text())
CASES = {f"{c['name']}-{'REML' if c['REML'] else 'ML'}": c for c in LMERTEST["cases"]}
METHODS = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward_roger"}
pytestmark = pytest.mark.filterwarnings("ignore::linkmix.MissingDataWarning")


def case_data(case) -> pd.DataFrame:
    return pd.read_csv(DATA / case["file"], dtype={c: str for c in case["factors"]})


@pytest.fixture(scope="module", params=sorted(CASES))
def case_fit(request):
    case = CASES[request.param]
    return case, linkmix.lmer(case["formula"], case_data(case), REML=case["REML"])


def assert_matches(table, ref):
    """df within 1e-4 relative and p within 1e-6 absolute (the issue's bar), estimate and
    SE within 1e-6 relative (R names columns its own way; the order is the same)."""
    np.testing.assert_allclose(table["df"], ref["df"], rtol=1e-4)
    np.testing.assert_allclose(table["p_value"], ref["p_value"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["estimate"], ref["estimate"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(table["std_error"], ref["std_error"], rtol=1e-6)
    np.testing.assert_allclose(table["t_value"], ref["t_value"], rtol=1e-5, atol=1e-8)


def test_fits_reach_the_reference_optimum(case_fit):
    case, fit = case_fit
    assert fit.nobs == case["n"]
    assert fit.objective <= case["objective"] + 1e-9 * abs(case["objective"])
    assert fit.singular == case["singular"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_coefficient_tests_match_lmertest(case_fit, method):
    case, fit = case_fit
    if METHODS[method] not in case:
        with pytest.raises(ArgumentError, match="needs a REML fit"):
            fit.coef_table(method)
        return
    ref = case[METHODS[method]]
    assert_matches(fit.coef_table(method), ref)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_contrasts_match_lmertest(case_fit, method):
    case, fit = case_fit
    for contrast in case["contrasts"]:
        if METHODS[method] not in contrast:
            continue
        ref = {k: [v] for k, v in contrast[METHODS[method]].items()}
        ref = {"estimate": ref["Estimate"], "std_error": ref["Std. Error"], "df": ref["df"],
               "t_value": ref["t value"], "p_value": ref["Pr(>|t|)"]}
        assert_matches(fit.contrast(np.array(contrast["L"])[None, :], method), ref)


def test_the_methods_agree_at_lmertests_estimates():
    """At lme4's own θ (not linkmix's optimum) the methods themselves agree more tightly:
    Satterthwaite's df to 1e-6 (both difference the criterion numerically), Kenward-Roger's
    to 1e-10 (closed form)."""
    for case in LMERTEST["cases"]:
        model = linkmix.LinearMixedModel(case["formula"], case_data(case), REML=case["REML"])
        fit = model.results_at(np.array(case["theta"]))
        np.testing.assert_allclose(fit.coef_table()["df"], case["satterthwaite"]["df"],
                                   rtol=1e-6, err_msg=case["name"])
        if case["REML"]:
            table = fit.coef_table("kenward-roger")
            np.testing.assert_allclose(table["df"], case["kenward_roger"]["df"], rtol=1e-10,
                                       err_msg=case["name"])
            np.testing.assert_allclose(table["std_error"], case["kenward_roger"]["std_error"],
                                       rtol=1e-10, err_msg=case["name"])


def test_satterthwaite_parts_against_finite_differences(sleepstudy):
    """The covariance of φ = (θ_w, log σ) is twice the inverse Hessian of the REML
    criterion with σ explicit, and the Jacobian of cov(β̂) over φ is σ²∂(X'V₀⁻¹X)⁻¹/∂θ_w
    and 2σ²(…)⁻¹, all differenced here in lme4's own terms."""
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    conditioning = fit.model.conditioning
    x = np.append(conditioning.theta_working(fit.theta), np.log(fit.sigma))
    parts = Satterthwaite.of(fit.model, x[:-1], fit.sigma)

    def criterion(v):
        return fit.model.variance_deviance(conditioning.theta(v[:-1]), np.exp(v[-1]))

    _, H, _, _ = numdiff.hessian(criterion, x, rel_step=1e-3)
    np.testing.assert_allclose(parts.vcov_varpar, 2 * np.linalg.inv(H), rtol=1e-3)

    def cov(v):
        return (np.exp(2 * v[-1]) * fit.model.unscaled_vcov(conditioning.theta(v[:-1]))).ravel()

    J = numdiff.jacobian(cov, x, rel_step=1e-6)
    np.testing.assert_allclose(parts.jacobian.reshape(len(x), -1), J.T, rtol=1e-6,
                               atol=1e-8 * np.abs(J).max())
    np.testing.assert_allclose(parts.vcov_beta, fit.vcov.to_numpy(), rtol=1e-12)
    # the balanced random-slope model: the slope's df is the subjects less one
    assert fit.coef_table().loc["Days", "df"] == pytest.approx(17.0, rel=1e-6)


def test_variance_deviance_is_the_criterion_at_sigma_hat(sleepstudy):
    for REML in (True, False):
        fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, REML=REML)
        assert fit.model.variance_deviance(fit.theta, fit.sigma) == pytest.approx(
            fit.objective, rel=1e-13)


def test_tests_are_snapshots(sleepstudy):
    """A fit's tests do not change when its model is later refitted with another response
    (batch fits reuse models)."""
    formula = "Reaction ~ Days + (Days | Subject)"
    unbalanced = sleepstudy.iloc[::3].iloc[2:]
    model = linkmix.LinearMixedModel(formula, unbalanced)
    fit = model.fit()
    rng = np.random.default_rng(1)
    model.set_response(unbalanced["Reaction"].to_numpy() + rng.normal(0, 30, len(unbalanced)))
    other = model.fit()
    table = fit.coef_table()
    fresh = linkmix.lmer(formula, unbalanced).coef_table()
    np.testing.assert_allclose(table.to_numpy(), fresh.to_numpy(), rtol=1e-10)
    assert not np.allclose(other.coef_table()["df"], table["df"], rtol=1e-3)


def test_wald_is_a_z_test(sleepstudy):
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    table = fit.coef_table("wald")
    assert np.all(np.isinf(table["df"]))
    from scipy.stats import norm
    np.testing.assert_allclose(table["p_value"], 2 * norm.sf(np.abs(table["t_value"])),
                               rtol=1e-12)
    np.testing.assert_allclose(table["std_error"], fit.se, rtol=1e-14)


def test_p_values_far_in_the_tail():
    assert t_pvalues(40.0, np.inf) == pytest.approx(0.0, abs=1e-300)
    assert 0 < t_pvalues(40.0, 12.1) < 1e-13
    from scipy.stats import t
    assert t_pvalues(-2.5, 7.3) == pytest.approx(2 * t.sf(2.5, 7.3), rel=1e-12)
    assert np.isnan(t_pvalues(np.nan, 3.0))


def test_bad_ddf_is_named(sleepstudy):
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    with pytest.raises(ArgumentError, match="ddf must be one of"):
        fit.coef_table("bogus")
    assert fit.coef_table("KR").equals(fit.coef_table("kenward-roger"))


# ---- contrasts ---------------------------------------------------------------------------
NAMES = ["(Intercept)", "Condition[T.C2]", "Condition[T.C3]", "Condition[T.C20]", "x:z"]


def test_contrast_text():
    assert parse_contrast("Condition[T.C2] - Condition[T.C3]", NAMES).tolist() == \
        [0, 1, -1, 0, 0]
    assert parse_contrast("-0.5*Condition[T.C20] + 2 x:z", NAMES).tolist() == \
        [0, 0, 0, -0.5, 2]
    assert parse_contrast("`(Intercept)` + Condition[T.C2] + Condition[T.C2]",
                          NAMES).tolist() == [1, 2, 0, 0, 0]
    assert parse_contrast("1e-1*x:z", NAMES).tolist() == [0, 0, 0, 0, 0.1]


@pytest.mark.parametrize("text, message", [
    ("", "it is empty"),
    ("Condition[T.C4]", "expected a fixed-effect name"),
    ("Condition[T.C2] Condition[T.C3]", "expected \\+ or -"),
    ("__import__('os').system('true')", "expected a fixed-effect name"),
    ("`nope`", "unknown fixed effect 'nope'"),
    ("`x:z", "unclosed backtick"),
    ("2 *", "expected a fixed-effect name"),
])
def test_contrast_errors_name_the_problem(text, message):
    with pytest.raises(ArgumentError, match=message):
        parse_contrast(text, NAMES)


def test_contrast_forms():
    labels, L = contrast_matrix({"Condition[T.C2]": 1, "Condition[T.C3]": -1}, NAMES)
    assert labels == ["Condition[T.C2] - Condition[T.C3]"] and L.tolist() == [[0, 1, -1, 0, 0]]
    labels, L = contrast_matrix(["x:z", "2*Condition[T.C2]"], NAMES)
    assert labels == ["x:z", "2*Condition[T.C2]"] and L.shape == (2, 5)
    labels, L = contrast_matrix(np.eye(5)[[1]] * -2, NAMES)
    assert labels == ["- 2*Condition[T.C2]"]
    for bad, message in [(np.ones((1, 4)), "one column per fixed effect"),
                         ({"zz": 1}, "unknown fixed effect 'zz'"),
                         (object(), "a contrast is a string"),
                         ([[np.nan] * 5], "must be finite")]:
        with pytest.raises(ArgumentError, match=message):
            contrast_matrix(bad, NAMES)


# ---- linked fits: Satterthwaite on the constraint manifold -------------------------------
@pytest.mark.parametrize("name", ["sleepstudy_slopes-ML", "Machines_nested-ML",
                                  "Orthodont_unbalanced-ML", "skyline_peptide-ML"])
def test_unconstrained_linked_fit_is_lmertests_ml_fit(name):
    """Without constraints the manifold is everything, and the linked fit's tests are
    lmerTest's of the ML fit (df within 1e-4; SLSQP leaves β within 1e-5 of the optimum)."""
    case = CASES[name]
    fit = linkmix.LinkedModel(case["formula"], case_data(case)).fit()
    table = fit.coef_table()
    np.testing.assert_allclose(table["df"], case["satterthwaite"]["df"], rtol=1e-4)
    np.testing.assert_allclose(table["estimate"], case["satterthwaite"]["estimate"],
                               rtol=1e-4, atol=1e-6)


def test_two_forms_of_the_seed_model_agree():
    """M2 (a constraint) and M1 (a linked mean) are one model: their fixed effects' df agree
    within 2% (M2 holds the constraint's curvature at the optimum, M1 differences its mean)
    and every test is a proper one."""
    data = linkmix.datasets.simulate_peptide(seed=1)
    m2 = linkmix.lmer(examples.M2_FORMULA, data, constraints=examples.M2_CONSTRAINT)
    m1 = linkmix.lmer(examples.M1_FORMULA, data, mean=examples.M1_MEAN)
    t2, t1 = m2.coef_table(), m1.coef_table()
    shared = t1.index
    np.testing.assert_allclose(t2.loc[shared, "df"], t1["df"], rtol=0.02)
    np.testing.assert_allclose(t2.loc[shared, "std_error"], t1["std_error"], rtol=1e-4)
    assert np.all((t2["p_value"] > 0) & (t2["p_value"] < 1))
    np.testing.assert_allclose(t2["std_error"], m2.params.loc[
        t2.index, "std_error"], rtol=1e-12)
    with pytest.raises(ArgumentError, match="linked fit is maximum likelihood"):
        m2.coef_table("kenward-roger")
    wald = m2.contrast("t2m1 - t2m2", ddf="wald")
    assert np.isinf(wald["df"].iloc[0]) and 0 < wald["p_value"].iloc[0] < 1


def test_a_contrast_tied_to_variance_parameters_has_no_satterthwaite_df(sleepstudy):
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy,
                       constraints="Days == 2 * `sd[Days|Subject]`")
    table = fit.coef_table()
    assert np.isnan(table.loc["Days", "df"]) and np.isfinite(table.loc["Days", "std_error"])
    assert np.isfinite(table.loc["(Intercept)", "df"])


# ---- the command line and JSON -----------------------------------------------------------
def test_cli_fit_takes_ddf(tmp_path, capsys):
    from linkmix.cli import DDF_CHOICES, main
    from linkmix.inference import DDF_METHODS

    assert DDF_CHOICES == DDF_METHODS
    out = tmp_path / "fit.json"
    path = linkmix.datasets.path("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    assert main(["fit", path, "-f", formula, "--ddf", "kenward-roger", "--json", str(out)]) == 0
    assert "Kenward-Roger's method" in capsys.readouterr().out
    record = json.loads(out.read_text())["fixef_tests"]
    assert record["ddf"] == "kenward-roger" and record["df"]["Days"] == pytest.approx(17.0)
    assert main(["fit", path, "-f", formula, "--ml", "--ddf", "kenward-roger"]) == 2
    assert "needs a REML fit" in capsys.readouterr().err
    assert main(["fit", path, "-f", formula, "--ddf", "wald", "--json", str(out)]) == 0
    assert "Pr(>|z|)" in capsys.readouterr().out
    assert json.loads(out.read_text())["fixef_tests"]["df"]["Days"] is None   # inf → null


# ---- many groups: t tests, contrasts and their adjustment in batch tables ----------------
FORMULA_MS = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"


@pytest.fixture(scope="module")
def msstats():
    data = linkmix.datasets.simulate_msstats(12, seed=5, missing_rate=0.1)
    # one peptide never seen in condition C3: its contrasts with C3 cannot be estimated
    first = data["PeptideSequence"].unique()[0]
    return data[~((data["PeptideSequence"] == first) & (data["Condition"] == "C3"))]


def test_batch_rows_are_the_single_fits_tests(msstats):
    table = linkmix.fit_groups(msstats, "PeptideSequence", FORMULA_MS, n_jobs=1,
                               contrasts=["pairwise:Condition", "Feature[T.F1] - Feature[T.F2]"])
    labels = ["Condition[C2] - Condition[C1]", "Condition[C3] - Condition[C1]",
              "Condition[C3] - Condition[C2]", "Feature[T.F1] - Feature[T.F2]"]
    assert list(table.loc[table.kind == "contrast", "parameter"].unique()) == labels
    for peptide, rows in list(table.groupby("PeptideSequence"))[1:4]:
        fit = linkmix.lmer(FORMULA_MS, msstats[msstats.PeptideSequence == peptide])
        fixef = rows[rows.kind == "fixef"].set_index("parameter")
        single = fit.coef_table()
        np.testing.assert_allclose(fixef.loc[single.index, ["estimate", "std_error", "df",
                                                            "p_value"]],
                                   single[["estimate", "std_error", "df", "p_value"]],
                                   rtol=1e-8)
        contrasts = rows[rows.kind == "contrast"].set_index("parameter")
        expected = fit.contrast(["Condition[T.C3]", "Condition[T.C3] - Condition[T.C2]"])
        np.testing.assert_allclose(contrasts.loc[labels[1:3], ["estimate", "df", "p_value"]],
                                   expected[["estimate", "df", "p_value"]], rtol=1e-8)
        from scipy.special import stdtrit
        half = stdtrit(contrasts["df"], 0.975) * contrasts["std_error"]
        np.testing.assert_allclose(contrasts["ci_upper"] - contrasts["estimate"], half,
                                   rtol=1e-10)
    # the peptide without C3: those contrasts are NaN, the others are estimated
    first = table[table.PeptideSequence == msstats.PeptideSequence.iloc[0]]
    first = first[first.kind == "contrast"].set_index("parameter")
    assert first.loc[labels[1:3], "estimate"].isna().all()
    assert first.loc[[labels[0], labels[3]], "p_value"].notna().all()
    # Benjamini-Hochberg per parameter across the groups
    for label in labels:
        rows = table[table.parameter == label]
        np.testing.assert_allclose(rows["p_adjusted"],
                                   linkmix.inference.benjamini_hochberg(rows["p_value"]))


def test_batch_contrast_errors_fail_once(msstats):
    for contrasts, message in [("Condition[T.C9] - Condition[T.C2]", "expected a fixed-effect"),
                               ("pairwise:Nope", "unknown column 'Nope'"),
                               (["pairwise:Condition", "pairwise:Condition"], "repeat"),
                               (3, "contrasts must be a string")]:
        with pytest.raises(ArgumentError, match=message):
            linkmix.fit_groups(msstats, "PeptideSequence", FORMULA_MS, contrasts=contrasts)
    with pytest.raises(ArgumentError, match="treatment-coded main effect"):
        linkmix.fit_groups(msstats, "PeptideSequence",
                           "log2Intensity ~ Condition * Feature + (1 | BioReplicate)",
                           contrasts="pairwise:Condition")
    with pytest.raises(ArgumentError, match="needs REML fits"):
        linkmix.fit_groups(msstats, "PeptideSequence", FORMULA_MS, REML=False,
                           ddf="kenward-roger")


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_cli_batch_contrasts_and_adjusted_p(msstats, tmp_path, suffix, capsys):
    pytest.importorskip("pyarrow")
    from linkmix.cli import main

    source = tmp_path / "data.csv"
    msstats.to_csv(source, index=False)
    out = tmp_path / f"out.{suffix}"
    args = ["batch", str(source), "--by", "PeptideSequence", "-f", FORMULA_MS, "--jobs", "1",
            "--no-progress", "--contrast", "pairwise:Condition", "-o", str(out)]
    if suffix == "csv":
        pytest.importorskip("matplotlib")
        args += ["--plots", str(tmp_path / "plots")]
    assert main(args) == 0
    written = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
    expected = linkmix.fit_groups(msstats, "PeptideSequence", FORMULA_MS, n_jobs=1,
                                  contrasts="pairwise:Condition")
    assert list(written.columns) == list(expected.columns)
    for column in ("estimate", "df", "p_value", "p_adjusted"):
        np.testing.assert_allclose(written[column], expected[column], rtol=1e-12)
    assert written["p_adjusted"].notna().sum() == written["p_value"].notna().sum() > 0
    assert not list(tmp_path.glob("*.partial"))
    if suffix == "csv":  # the default volcano: the first contrast
        assert (tmp_path / "plots" / "volcano_Condition_C2__-_Condition_C1_.png").exists()
