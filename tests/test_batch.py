"""Batch fitting (one model per peptide): truth recovery, executors, broken groups, CLI, plots."""


import numpy as np
import pandas as pd
import pytest
import scipy.stats

import linkmix
from linkmix import datasets
from linkmix.cli import main as cli_main
from linkmix.examples import M2_CONSTRAINT, M2_FORMULA

PLAIN = "x ~ 1 + t2 + m2 + t2m1 + (0 + treatment || replicate)"


@pytest.fixture(scope="module")
def experiment():
    return datasets.simulate_experiment(150, seed=3)


@pytest.fixture(scope="module")
def plain_results(experiment):
    data, _ = experiment
    return linkmix.fit_groups(data, "peptide", PLAIN, n_jobs=1)  # REML, as lmer


def test_estimates_recover_the_truth_within_their_ses(experiment, plain_results):
    _, truth = experiment
    truth = truth.set_index("peptide")
    for parameter, true_name in [("m2", "alpha2"), ("(Intercept)", "mu")]:
        rows = plain_results[plain_results.parameter == parameter].set_index("peptide")
        z = (rows.estimate - truth[true_name]) / rows.std_error
        assert abs(z.mean()) < 3 / np.sqrt(len(z)) + 0.1, parameter
    # Wald intervals (normal quantile, 12 residual df) of a within-replicate contrast cover
    # at about their level; the intercept's rest on 4 replicates' variance (not tested)
    rows = plain_results[plain_results.parameter == "m2"].set_index("peptide")
    covered = (rows.ci_lower <= truth.alpha2) & (truth.alpha2 <= rows.ci_upper)
    assert 0.86 <= covered.mean() <= 0.99
    assert plain_results.error.isna().all() and plain_results.converged.all()


def test_batch_equals_single_fits(experiment, plain_results):
    data, _ = experiment
    group = data[data.peptide == "PEP00007"]
    single = linkmix.lmer(PLAIN, group)
    rows = plain_results[plain_results.peptide == "PEP00007"].set_index("parameter")
    for name, est in single.params.estimate.items():
        assert rows.estimate[name] == pytest.approx(est, rel=1e-6, abs=1e-8), name
    assert rows.loglik.iloc[0] == pytest.approx(single.loglik, rel=1e-9)


def test_process_pool_gives_identical_results(experiment, plain_results):
    data, _ = experiment
    pooled = linkmix.fit_groups(data, "peptide", PLAIN, n_jobs=2, chunk_size=20)
    pd.testing.assert_frame_equal(pooled, plain_results)


def test_dask_local_cluster_gives_identical_results(experiment, plain_results):
    distributed = pytest.importorskip("distributed")
    data, _ = experiment
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        on_dask = linkmix.fit_groups(data, "peptide", PLAIN,
                                     scheduler=cluster.scheduler_address, chunk_size=25)
    pd.testing.assert_frame_equal(on_dask, plain_results)


def test_broken_groups_are_flagged_and_the_batch_goes_on():
    data, _ = datasets.simulate_experiment(6, seed=5, missing_rate=0.1)
    data.loc[data.peptide == "PEP00001", "x"] = np.nan                        # all missing
    one_replicate = data.peptide == "PEP00002"
    data.loc[one_replicate, "replicate"] = "1"                               # one level
    data.loc[data.index[data.peptide == "PEP00003"][:1], "x"] = np.inf       # infinite
    results = linkmix.fit_groups(data, "peptide", PLAIN, REML=False, n_jobs=1)
    per_group = results.drop_duplicates("peptide").set_index("peptide")
    assert per_group.loc["PEP00001", "error"] == "no complete rows"
    assert "only 1 level" in per_group.loc["PEP00002", "error"]
    assert "infinite" in per_group.loc["PEP00003", "error"]
    fitted = per_group.error.isna()
    assert fitted.sum() == 3 and per_group.loc[fitted, "converged"].all()
    expected = data.groupby("peptide").x.apply(lambda x: x.isna().sum())
    for peptide in per_group.index[fitted]:
        assert per_group.loc[peptide, "n_dropped"] == expected[peptide]
        assert per_group.loc[peptide, "n"] == 16 - expected[peptide]


def test_constrained_batch_reports_residuals_and_optima():
    data, truth = datasets.simulate_experiment(5, seed=11)
    results = linkmix.fit_groups(data, "peptide", M2_FORMULA, constraints=M2_CONSTRAINT,
                                 n_jobs=1, n_starts=3)
    assert results.error.isna().all()
    assert (results.constraint_residual < 1e-8).all()
    assert (results.n_optima >= 1).all()
    c2 = results[results.parameter == "t2"].set_index("peptide").estimate
    single = linkmix.lmer(M2_FORMULA, data[data.peptide == "PEP00002"],
                          constraints=M2_CONSTRAINT, n_starts=3)
    assert c2["PEP00002"] == pytest.approx(single.params.estimate["t2"],
                                           abs=1e-6)


def test_bad_batch_arguments():
    data, _ = datasets.simulate_experiment(2, seed=1)
    with pytest.raises(linkmix.LinkmixError, match="unknown grouping column"):
        linkmix.fit_groups(data, "protein", PLAIN)
    with pytest.raises(linkmix.FormulaError):
        linkmix.fit_groups(data, "peptide", "x ~ t2 + (1 | replicate")
    with pytest.raises(linkmix.LinkmixError, match="unknown column.*'t3'"):
        linkmix.fit_groups(data, "peptide", "x ~ t3 + (1 | replicate)")
    with pytest.raises(linkmix.LinkmixError, match="response 'treatment' must be numeric"):
        linkmix.fit_groups(data, "peptide", "treatment ~ t2 + (1 | replicate)")


def msstats_table(n_peptides=30, seed=2) -> pd.DataFrame:
    """MSstats' long format from the seed simulator: Intensity on the raw scale."""
    data, _ = datasets.simulate_experiment(n_peptides, seed=seed)
    return pd.DataFrame({
        "ProteinName": "PROT" + (data.peptide.str[-5:].astype(int) // 3).astype(str),
        "PeptideSequence": data.peptide, "Condition": "C" + data.treatment,
        "BioReplicate": data.treatment + "_" + data.replicate,
        "Modification": "M" + data.modification, "Intensity": 2.0 ** data.x})


def test_cli_batch_msstats_with_log2_and_volcano(tmp_path, capsys):
    table = msstats_table()
    table.loc[3, "Intensity"] = 0.0   # MSstats marks absent features with 0 or NA
    csv = tmp_path / "msstats.csv"
    table.to_csv(csv, index=False)
    out, plots = tmp_path / "results.csv", tmp_path / "plots"
    code = cli_main(["batch", str(csv), "--by", "ProteinName", "--by", "PeptideSequence",
                     "--formula", "log2Intensity ~ Condition + Modification + (1 | BioReplicate)",
                     "--log2", "Intensity", "--ml", "-o", str(out), "--jobs", "1",
                     "--plots", str(plots), "--effect", "Condition[T.C2]", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "30 groups: 30 fitted, 0 failed; 1 rows with missing values dropped" in printed
    results = pd.read_csv(out)
    assert set(results.columns) >= {"ProteinName", "PeptideSequence", "parameter", "estimate",
                                    "std_error", "ci_lower", "ci_upper", "n_dropped", "error"}
    assert results.n_dropped.sum() == len(results[results.PeptideSequence ==
                                                  table.PeptideSequence[3]])
    # the PNG decodes, has the figure's size and draws something besides the background
    image = pytest.importorskip("matplotlib.image").imread(plots / "volcano_Condition_T.C2_.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10


def test_plots():
    pytest.importorskip("matplotlib")
    from linkmix.inference import benjamini_hochberg
    from linkmix.plots import caterpillar, profile, volcano

    data = datasets.load("sleepstudy")
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", data, REML=False)
    fig, table = profile(fit, "Days", points=7)
    best = table.loc[table.statistic.idxmin(), "value"]
    assert best == pytest.approx(fit.beta["Days"], abs=0.5 * fit.se["Days"])
    # the profile of a fixed effect is quadratic with curvature 1/SE² near the optimum
    one_se = table.statistic.iloc[(table.value - (fit.beta["Days"] + fit.se["Days"])).abs()
                                  .argmin()]
    assert 0.6 < one_se < 1.6
    # caterpillar: one point per level at its conditional mode b̃
    ax = caterpillar(fit).axes[0]
    assert sorted(np.asarray(ax.lines[0].get_xdata(), float)) == pytest.approx(
        sorted(fit.ranef()["Subject"].iloc[:, 0]), abs=1e-9)
    # volcano: every group's (estimate, −log10 two-sided t-test p, Satterthwaite's df),
    # significant ones apart; the Wald z test where a table has no t tests
    results = linkmix.fit_groups(*datasets.simulate_experiment(20, seed=4)[:1], "peptide",
                                 PLAIN, REML=False, n_jobs=1)
    rows = results[results.parameter == "m2"]
    p = 2 * scipy.stats.t.sf(np.abs(rows.estimate / rows.std_error), rows.df)
    np.testing.assert_allclose(rows.p_value, p, rtol=1e-9)
    assert np.all(rows.df < 20)
    drawn = np.vstack([c.get_offsets() for c in volcano(results, "m2").axes[0].collections])
    np.testing.assert_allclose(sorted(map(tuple, drawn)),
                               sorted(zip(rows.estimate, -np.log10(p))), rtol=1e-9)
    old = results.drop(columns=["df", "t_value", "p_value", "p_adjusted"])
    z = 2 * scipy.stats.norm.sf(np.abs(rows.estimate / rows.std_error))
    drawn = np.vstack([c.get_offsets() for c in volcano(old, "m2").axes[0].collections])
    np.testing.assert_allclose(sorted(map(tuple, drawn)),
                               sorted(zip(rows.estimate, -np.log10(z))), rtol=1e-9)
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03, 0.5]),
                               [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


def test_profile_of_a_nonlinear_fit():
    """Refits through LinkedModel.from_model: the nonlinear model itself, no formula re-parsed;
    the statistic is 0 at the estimate and about 1 one SE away."""
    pytest.importorskip("matplotlib")
    from linkmix.plots import profile

    fit = linkmix.nlmer("circumference ~ SSlogis(age, Asym, xmid, scal)", datasets.load("Orange"),
                        random="Asym | Tree")
    xmid, se = fit.beta["xmid"], fit.se["xmid"]
    _, table = profile(fit, "xmid", grid=[xmid - se, xmid, xmid + se])
    assert table.statistic[1] == pytest.approx(0.0, abs=1e-5)
    assert 0.6 < table.statistic[0] < 1.6 and 0.6 < table.statistic[2] < 1.6


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_cli_batch_writes_chunks_as_they_come(tmp_path, capsys, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    data = datasets.simulate_msstats(23, seed=5, missing_rate=0.1)
    data.loc[data.PeptideSequence == "PEP03", "log2Intensity"] = np.nan  # a failed group
    csv = tmp_path / "table.csv"
    data.to_csv(csv, index=False)
    out = tmp_path / f"results{suffix}"
    formula = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"
    code = cli_main(["batch", str(csv), "--by", "PeptideSequence", "--formula", formula,
                     "-o", str(out), "--jobs", "1", "--chunk-size", "4", "--no-progress"])
    assert code == 0
    assert "23 groups: 22 fitted, 1 failed" in capsys.readouterr().out
    written = pd.read_parquet(out) if suffix == ".parquet" else \
        pd.read_csv(out, sep="\t" if suffix == ".tsv" else ",")
    expected = linkmix.fit_groups(linkmix.read_table(csv), "PeptideSequence", formula, n_jobs=1)
    assert list(written.columns) == list(expected.columns)
    assert list(written.PeptideSequence) == list(expected.PeptideSequence)
    np.testing.assert_allclose(written.estimate, expected.estimate, rtol=1e-12)
    assert written.error.notna().sum() == 1


def test_iter_fit_groups_yields_fit_groups_in_order():
    data = datasets.simulate_msstats(30, seed=6, missing_rate=0.05)
    formula = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"
    parts = list(linkmix.iter_fit_groups(data, "PeptideSequence", formula, n_jobs=2,
                                         chunk_size=4))
    assert len(parts) == 8
    whole = linkmix.fit_groups(data, "PeptideSequence", formula, n_jobs=1)
    streamed = pd.concat(parts, ignore_index=True)
    # a chunk cannot know the adjustment across groups: it is made over the whole table
    assert streamed["p_adjusted"].isna().all()
    streamed["p_adjusted"] = linkmix.batch.adjusted_p_values(streamed["parameter"],
                                                             streamed["p_value"])
    pd.testing.assert_frame_equal(streamed, whole)
