"""Results of a fit: names, inference, random effects, prediction, summary, JSON, CLI."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix.cli import main as cli_main
from conftest import load_dataset

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def fit():
    return linkmix.lmer(FORMULA, load_dataset("sleepstudy"))


def test_params_names_are_stable(fit):
    assert list(fit.params.index) == ["(Intercept)", "Days", "sd[(Intercept)|Subject]",
                                     "sd[Days|Subject]", "cor[(Intercept),Days|Subject]",
                                     "sigma"]
    params = fit.params
    assert params.loc["sigma", "estimate"] == pytest.approx(fit.sigma)
    assert params.loc["Days", "std_error"] == pytest.approx(fit.se["Days"])
    # lme4: Subject (Intercept) 24.741, Days 5.922, corr 0.066 (REML)
    assert params.loc["sd[(Intercept)|Subject]", "estimate"] == pytest.approx(24.7407, rel=1e-4)
    assert params.loc["sd[Days|Subject]", "estimate"] == pytest.approx(5.92214, rel=1e-4)
    assert params.loc["cor[(Intercept),Days|Subject]", "estimate"] == pytest.approx(0.06555,
                                                                                  abs=1e-3)


def test_information_criteria_match_lme4(fit):
    """lme4 1.1-31: AIC, BIC, deviance(REML = FALSE) and logLik of the REML fit, and AIC
    and BIC of the ML fit (tests/data/make_lme4_information_criteria.R)."""
    assert fit.df_model == 6 and fit.ngroups == {"Subject": 18}
    assert fit.aic == pytest.approx(1755.6282719600, rel=1e-8)
    assert fit.bic == pytest.approx(1774.7860130653, rel=1e-8)
    assert fit.loglik == pytest.approx(-871.8141359800, rel=1e-8)
    assert fit.deviance == pytest.approx(1751.9858664320, rel=1e-8)
    ml = linkmix.lmer(FORMULA, load_dataset("sleepstudy"), REML=False)
    assert ml.aic == pytest.approx(1763.9393444890, rel=1e-8)
    assert ml.bic == pytest.approx(1783.0970855943, rel=1e-8)


def test_lrt_matches_lme4_anova():
    """anova(m0, m1) of lme4 1.1-31: Chisq 42.1392985162 on 2 df, p = 7.0724126384e-10."""
    data = load_dataset("sleepstudy")
    m1 = linkmix.lmer(FORMULA, data, REML=False)
    m0 = linkmix.lmer("Reaction ~ Days + (1 | Subject)", data, REML=False)
    test = linkmix.lrt(m0, m1)
    assert test.df == 2
    assert test.statistic == pytest.approx(42.1392985162, rel=1e-7)
    assert test.p_value == pytest.approx(7.0724126384e-10, rel=1e-6)


def test_vcov_matches_dense_gls(fit):
    d = fit.design
    ZL = d.Z_sparse().toarray() @ d.Lambda_sparse(fit.theta).toarray()
    V = fit.sigma**2 * (ZL @ ZL.T + np.eye(d.n))
    expected = np.linalg.inv(d.X.T @ np.linalg.solve(V, d.X))
    np.testing.assert_allclose(fit.vcov.to_numpy(), expected, rtol=1e-8)


def test_ranef_fitted_residuals_consistent(fit):
    re = fit.ranef()["Subject"]
    assert re.shape == (18, 2) and list(re.columns) == ["(Intercept)", "Days"]
    # lme4: ranef(fm1)$Subject["308", ] = 2.2585, 9.1990
    assert re.loc["308"].to_numpy() == pytest.approx([2.2585, 9.1990], abs=2e-3)
    # b̃ = ΛΛ'Z'V₀⁻¹(y − Xβ̂), V₀ = I + ZΛΛ'Z', by dense algebra
    d = fit.design
    Lam = d.Lambda_sparse(fit.theta).toarray()
    ZL = d.Z_sparse().toarray() @ Lam
    r = d.y - d.X @ fit.beta.to_numpy()
    b = Lam @ (ZL.T @ np.linalg.solve(ZL @ ZL.T + np.eye(d.n), r))
    np.testing.assert_allclose(fit.fitted(), d.X @ fit.beta.to_numpy() + d.Z_sparse() @ b,
                               rtol=1e-9)
    np.testing.assert_allclose(fit.residuals(), r - d.Z_sparse() @ b, rtol=1e-7, atol=1e-9)


def test_predict_new_data(fit):
    data = load_dataset("sleepstudy")
    np.testing.assert_allclose(fit.predict(data), fit.fitted(), rtol=1e-12)
    new = pd.DataFrame({"Days": [0.0, 5.0, 5.0], "Subject": ["308", "308", "new-subject"]})
    population = fit.beta["(Intercept)"] + fit.beta["Days"] * new.Days.to_numpy()
    np.testing.assert_allclose(fit.predict(new, include_random=False), population)
    re = fit.ranef()["Subject"].loc["308"]
    with pytest.raises(linkmix.DataError, match=r"level\(s\) \['new-subject'\] of 'Subject' "
                                                r"not seen in the fit; pass allow_new_levels"):
        fit.predict(new)    # lme4 refuses too, unless allow.new.levels = TRUE
    with_re = fit.predict(new, allow_new_levels=True)
    assert with_re[1] == pytest.approx(population[1] + re["(Intercept)"] + 5 * re["Days"])
    assert with_re[2] == pytest.approx(population[2])  # unseen level: population prediction
    with pytest.raises(linkmix.DataError, match="unknown column 'Days' in newdata") as error:
        fit.predict(pd.DataFrame({"Subject": ["308"]}))
    assert "NameError" not in str(error.value) and "formulaic" not in str(error.value)


def test_summary_reads_like_lme4(fit):
    text = str(fit.summary())
    for piece in ["Linear mixed model fit by REML", "REML criterion at convergence",
                  "Random effects:", "Subject", "Residual", "Number of obs: 180",
                  "Fixed effects (t tests use Satterthwaite's method):", "Estimate",
                  "Std. Error", "df", "t value", "Pr(>|t|)"]:
        assert piece in text


def test_ml_deviance_of_reml_fit_is_full_likelihood(fit):
    """−2 log L at the REML estimates (σ at its ML scaling), against a dense normal density."""
    d = fit.design
    ZL = d.Z_sparse().toarray() @ d.Lambda_sparse(fit.theta).toarray()
    V = fit.sigma_ml_at_fit**2 * (ZL @ ZL.T + np.eye(d.n))
    r = d.y - d.X @ fit.beta.to_numpy()
    dense = d.n * math.log(2 * math.pi) + np.linalg.slogdet(V)[1] + r @ np.linalg.solve(V, r)
    assert fit.deviance == pytest.approx(dense, rel=1e-10)


def test_cli_fit_prints_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "fit.json"
    code = cli_main(["fit", linkmix.datasets.path("sleepstudy"), "--formula", FORMULA, "--ml",
                     "--json", str(out)])
    assert code == 0
    assert "maximum likelihood" in capsys.readouterr().out
    record = json.loads(out.read_text())
    for key in ("objective", "loglik", "theta", "fixef", "sigma", "params", "converged"):
        assert key in record
    assert record["objective"] == pytest.approx(1751.93934448899, rel=1e-6)
    assert record["converged"] is True
    assert set(record["params"]) >= {"(Intercept)", "Days", "sigma", "sd[Days|Subject]"}


def test_cli_reports_bad_input_without_traceback(capsys):
    code = cli_main(["fit", linkmix.datasets.path("sleepstudy"), "--formula",
                     "Reaction ~ Dayz + (1 | Subject)"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown column 'Dayz'" in err and "Traceback" not in err
    assert cli_main(["fit", "/nonexistent.csv", "--formula", FORMULA]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_read_table_keeps_quoted_codes_as_text():
    data = linkmix.read_table(linkmix.datasets.path("sleepstudy"))
    assert not pd.api.types.is_numeric_dtype(data["Subject"])
    assert pd.api.types.is_numeric_dtype(data["Days"])


def test_read_table_reads_only_the_columns_asked_for(tmp_path):
    """``columns`` keeps those the file has (and ``factors``), as the whole read gives
    them; a name the file lacks is the caller's to report.  Parquet alike."""
    path = linkmix.datasets.path("sleepstudy")
    whole = linkmix.read_table(path)
    some = linkmix.read_table(path, columns=["Reaction", "Subject", "Nope"], factors=["Days"])
    assert list(some.columns) == ["Reaction", "Days", "Subject"]
    pd.testing.assert_frame_equal(some, whole[["Reaction", "Days", "Subject"]].assign(
        Days=whole.Days.astype(str)), check_dtype=False)
    pytest.importorskip("pyarrow")
    whole.to_parquet(tmp_path / "sleep.parquet")
    some = linkmix.read_table(tmp_path / "sleep.parquet", columns=["Days", "Nope"])
    assert list(some.columns) == ["Days"]


def test_results_are_snapshots_of_their_response():
    """A model given another response (as a batch reuses a layout's model) leaves the
    results already made unchanged: they hold their numbers, not the engine's state."""
    data = load_dataset("sleepstudy")
    model = linkmix.LinearMixedModel(FORMULA, data)
    first = model.fit()
    before = (first.deviance, first.objective, first.residuals(), first.params.estimate.to_numpy())
    other = data.Reaction.to_numpy() * 0.5 + np.random.default_rng(1).normal(0, 20, len(data))
    model.set_response(other)
    second = model.fit()
    assert second.objective != pytest.approx(before[1])
    assert first.deviance == before[0] and first.objective == before[1]
    np.testing.assert_array_equal(first.residuals(), before[2])
    np.testing.assert_array_equal(first.params.estimate.to_numpy(), before[3])


def test_linked_results_are_snapshots_of_their_response():
    """Everything a linked fit reports, SEs and verdict included, is fixed when it is made."""
    data = linkmix.datasets.simulate_peptide(seed=3)
    model = linkmix.LinkedModel("x ~ 1 + t2 + (1 | replicate)", data,
                                constraints="t2 <= 100")
    first = model.fit()
    before = (first.residuals(), first._b(), first.reduced_hessian_eigenvalues.copy())
    model.set_response(data.x.to_numpy() + np.random.default_rng(2).normal(0, 1, len(data)))
    second = model.fit()
    assert second.objective != pytest.approx(first.objective)
    np.testing.assert_array_equal(first.residuals(), before[0])
    np.testing.assert_array_equal(first._b(), before[1])
    np.testing.assert_array_equal(first.reduced_hessian_eigenvalues, before[2])
    fresh = linkmix.LinkedModel("x ~ 1 + t2 + (1 | replicate)", data, constraints="t2 <= 100")
    np.testing.assert_array_equal(fresh.fit().params.std_error, first.params.std_error)


def test_linked_fit_without_derivatives():
    data = linkmix.datasets.simulate_peptide(seed=3)
    model = linkmix.LinkedModel("x ~ 1 + t2 + (1 | replicate)", data, constraints="t2 <= 100")
    full, bare = model.fit(), model.fit(derivatives=False)
    # the full fit's optimum is polished by Newton steps on the KKT conditions
    assert bare.objective == pytest.approx(full.objective, rel=1e-9)
    assert bare.reduced_hessian_eigenvalues is None and bare.reduced_hessian_singular is None
    assert np.isnan(bare.params.std_error).all() and np.isfinite(full.params.std_error).all()
    assert "not checked" in bare.verdict and "not checked" in str(bare.summary())
    assert bare.to_dict()["reduced_hessian_eigenvalues"] is None
    with pytest.raises(linkmix.ArgumentError, match="derivatives"):
        model.fit(derivatives="no")
