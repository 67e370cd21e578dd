"""Linked models (issue: constraints and linked means) against the seed reference.

tests/data/seed_model.json is an independent dense maximum-likelihood fit of the
seed model with many starts; its ``binding`` variant fixes b21 = b22 = 0.
"""

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

import linkmix
from linkmix import ConstraintError, FitError, datasets
from linkmix.cli import main as cli_main
from linkmix.examples import (BINDING_CONSTRAINT, BINDING_FORMULA, M1_FORMULA, M1_MEAN,
                              M2_CONSTRAINT, M2_FORMULA)

SEED = json.loads((pathlib.Path(__file__).parent / "data" / "seed_model.json").read_text())
SD1, SD2 = "sd[treatment[1]|replicate]", "sd[treatment[2]|replicate]"
# reference name → linkmix parameter name
NAMES = {"mu": "(Intercept)", "c2": "t2", "alpha2": "m2", "b21": "t2m1", "b22": "t2m2",
         "s1": SD1, "s2": SD2, "s": "sigma"}


def peptide(ref) -> pd.DataFrame:
    frame = pd.DataFrame(ref["data"])
    for col in ("treatment", "modification", "replicate"):
        frame[col] = frame[col].astype(str)
    return datasets.add_seed_columns(frame)


def case_id(ref):
    return f"{ref['variant']}-{ref['spec']['seed']}"


SEED_REFS = [r for r in SEED if r["variant"] == "seed"]
BINDING_REFS = [r for r in SEED if r["variant"] == "binding"]
_FITS = {}


def m2_fit(ref):
    key = ("M2", case_id(ref))
    if key not in _FITS:
        if ref["variant"] == "seed":
            _FITS[key] = linkmix.lmer(M2_FORMULA, peptide(ref), constraints=M2_CONSTRAINT)
        else:
            _FITS[key] = linkmix.lmer(BINDING_FORMULA, peptide(ref),
                                      constraints=BINDING_CONSTRAINT)
    return _FITS[key]


def m1_fit(ref):
    key = ("M1", case_id(ref))
    if key not in _FITS:
        _FITS[key] = linkmix.lmer(M1_FORMULA, peptide(ref), mean=M1_MEAN)
    return _FITS[key]


@pytest.mark.parametrize("ref", SEED, ids=case_id)
def test_constrained_fit_matches_dense_reference(ref):
    fit = m2_fit(ref)
    assert fit.converged
    assert fit.objective <= ref["neg2ll"] + 1e-5
    assert fit.objective == pytest.approx(ref["neg2ll"], abs=1e-5)
    assert max(abs(v) for v in fit.constraint_residuals.values()) < 1e-8
    params = fit.params.estimate
    best = ref["optima"][0]
    for ref_name, ours in NAMES.items():
        if ours in params:
            assert params[ours] == pytest.approx(best[ref_name], abs=1e-3), ref_name
        else:  # binding variant: b21 = b22 = 0 are not in the model
            assert best[ref_name] == 0.0


@pytest.mark.parametrize("ref", SEED_REFS, ids=case_id)
def test_linked_mean_equals_constrained_fit(ref):
    m1, m2 = m1_fit(ref), m2_fit(ref)
    assert m1.converged
    assert m1.loglik == pytest.approx(m2.loglik, abs=1e-6)
    p1, p2 = m1.params.estimate, m2.params.estimate
    for name in p1.index:
        assert p1[name] == pytest.approx(p2[name], abs=1e-4), name
    # M1's c2 is the link evaluated at its estimates
    c2 = datasets.seed_link(p1[SD1], p1[SD2], p1["t2m1"], p1["t2m2"])
    assert c2 == pytest.approx(p2["t2"], abs=1e-4)


@pytest.mark.parametrize("ref", SEED_REFS, ids=case_id)
def test_seed_link_only_identifies(ref):
    """The constrained maximum equals the unconstrained cell-means model's (lme4's fit)."""
    with pytest.warns(linkmix.RankDeficiencyWarning):
        cells = linkmix.lmer(M2_FORMULA, peptide(ref), REML=False)
    fit = m2_fit(ref)
    assert fit.loglik == pytest.approx(cells.loglik, abs=1e-6)
    assert fit.fixed_rank == 4 and fit.space.p == 5 and fit.constraint_completes_rank
    assert fit.n_free == cells.n_free == 7
    test = linkmix.lrt(fit, cells)
    assert test.df == 0 and math.isnan(test.p_value) and test.statistic < 1e-5
    # Wald SEs of identified effects agree with the unconstrained fit's
    assert fit.params.std_error["m2"] == pytest.approx(cells.se["m2"], rel=1e-3)


@pytest.mark.parametrize("ref", BINDING_REFS, ids=case_id)
def test_binding_link_is_tested_by_lrt(ref):
    with pytest.warns(linkmix.RankDeficiencyWarning):
        cells = linkmix.lmer(M2_FORMULA, peptide(ref), REML=False)
    fit = m2_fit(ref)
    seed_ref = next(r for r in SEED_REFS if r["spec"] == ref["spec"])
    test = linkmix.lrt(fit, cells)
    assert test.df == 2
    assert test.statistic == pytest.approx(ref["neg2ll"] - seed_ref["neg2ll"], abs=1e-5)
    assert 0 < test.p_value <= 1


def test_redundant_constraint_reproduces_the_plain_fit():
    data = datasets.load("sleepstudy")
    plain = linkmix.lmer("Reaction ~ Days + (Days | Subject)", data, REML=False)
    linked = linkmix.lmer("Reaction ~ Days + (Days | Subject)", data,
                          constraints="sigma >= 0.001")
    assert linked.objective == pytest.approx(plain.objective, rel=1e-9)
    np.testing.assert_allclose(linked.theta, plain.theta, atol=1e-3)
    np.testing.assert_allclose(linked.beta.to_numpy(), plain.beta.to_numpy(), rtol=1e-5)
    assert linked.sigma == pytest.approx(plain.sigma, rel=1e-5)
    p_lin = linked.params
    p_pl = plain.params
    for name in p_pl.index:
        assert p_lin.estimate[name] == pytest.approx(p_pl.estimate[name], rel=1e-3, abs=1e-4)
    np.testing.assert_allclose(p_lin.std_error[["(Intercept)", "Days"]],
                               p_pl.std_error[["(Intercept)", "Days"]], rtol=1e-3)
    assert linked.constraint_residuals["sigma >= 0.001"] > 0


def test_three_equally_likely_optima_are_all_reported():
    data = datasets.simulate_peptide(**datasets.THREE_OPTIMA)
    # 15 starts find all three for every seed tried (0-5); 10 miss one for some seeds
    fit = linkmix.lmer(M2_FORMULA, data, constraints=M2_CONSTRAINT, n_starts=15)
    assert not fit.identified and "NOT IDENTIFIED: 3 distinct optima" in fit.verdict
    assert len(fit.equally_likely) == 3
    found = sorted(o.params["t2"] for o in fit.equally_likely)
    # independent check: c2 solves c = A(1 + 2^(d2 - c))/(1 + 2^(d1 - c)) at the
    # unconstrained fit's identified quantities (A from the SDs, d_j = c2 + b2j)
    with pytest.warns(linkmix.RankDeficiencyWarning):
        cells = linkmix.lmer(M2_FORMULA, data, REML=False).params.estimate
    A = math.exp(0.5 * math.log(2) ** 2 * (cells[SD2] ** 2 - cells[SD1] ** 2))
    d1, d2 = cells["t2"] + cells["t2m1"], cells["t2"]

    def h(c):
        return A * (1 + 2 ** (d2 - c)) / (1 + 2 ** (d1 - c)) - c

    grid = np.linspace(-50, 200, 25001)
    values = np.array([h(c) for c in grid])
    crossings = np.flatnonzero(np.sign(values[:-1]) != np.sign(values[1:]))
    roots = [brentq(h, grid[i], grid[i + 1]) for i in crossings]
    assert len(roots) == 3
    np.testing.assert_allclose(found, roots, atol=1e-3)
    logliks = [o.loglik for o in fit.equally_likely]
    assert max(logliks) - min(logliks) < 1e-5
    assert "NOT IDENTIFIED" in str(fit.summary())


def test_unique_solution_is_reported_as_identified():
    fit = linkmix.lmer(M2_FORMULA, peptide(SEED_REFS[0]), constraints=M2_CONSTRAINT,
                       n_starts=8, seed=3)
    assert fit.identified and fit.verdict.startswith("identified")
    assert not fit.reduced_hessian_singular
    assert fit.reduced_hessian_eigenvalues.min() > 0


def test_constraint_that_cannot_identify_is_flagged():
    """A link between variances alone leaves the rank-deficient mean unidentified."""
    fit = linkmix.lmer(M2_FORMULA, peptide(SEED_REFS[0]), constraints=f"`{SD2}` == 2 * `{SD1}`")
    assert not fit.constraint_completes_rank
    assert fit.reduced_hessian_singular and not fit.identified
    assert "NOT IDENTIFIED locally" in fit.verdict
    assert fit.params.std_error.isna().all()


def test_gradient_matches_finite_differences():
    """The exact parts of ∇D (β and log σ by the envelope theorem, the mean's chain rule)
    against differences of D; its θ part is itself a difference, see the next test."""
    model = linkmix.LinkedModel(M1_FORMULA, peptide(SEED_REFS[1]), mean=M1_MEAN)
    rng = np.random.default_rng(0)
    z0 = model.base_start()
    nt = model.space.n_theta
    for _ in range(3):
        z = z0 + rng.normal(scale=0.05, size=len(z0))
        grad = model.gradient(z)[nt:]
        fd = np.empty(len(z) - nt)
        for k in range(nt, len(z)):
            h = 1e-6 * max(1, abs(z[k]))
            up, down = z.copy(), z.copy()
            up[k] += h
            down[k] -= h
            fd[k - nt] = (model.deviance(up) - model.deviance(down)) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def test_theta_gradient_matches_dense_closed_form():
    """∂D/∂θ against dense algebra (scalar terms, Λ = diag(θ_t(j))): with V₀ = I + ZΛ²Z',
    A = ΛZ'ZΛ + I and r = y − Xβ, ∂D/∂θ_k = −r'V₀⁻¹Z(2ΛE_k)Z'V₀⁻¹r/σ² + 2 tr(A⁻¹E_kZ'ZΛ),
    E_k the indicator of term k's random effects; z holds θ_w = θ/c_k."""
    model = linkmix.LinkedModel(M2_FORMULA, peptide(SEED_REFS[2]), constraints=M2_CONSTRAINT)
    design, space = model.design, model.space
    Z = design.Z_sparse().toarray()
    term_of = np.concatenate([np.full(t.q, k) for k, t in enumerate(design.terms)])
    rng = np.random.default_rng(1)
    z0 = model.base_start()
    for _ in range(3):
        z = z0 + rng.normal(scale=0.05, size=len(z0))
        theta, beta, sigma = space.user(z)
        lam = theta[term_of]
        V0 = np.eye(design.n) + (Z * lam**2) @ Z.T
        A = np.eye(design.q) + lam[:, None] * (Z.T @ Z) * lam[None, :]
        w = np.linalg.solve(V0, design.y - design.X @ beta)
        exact = np.empty(space.n_theta)
        for k in range(space.n_theta):
            E = (term_of == k).astype(float)
            dr2 = -w @ ((Z * (2 * lam * E)) @ (Z.T @ w))
            dlogdet = 2 * np.trace(np.linalg.solve(A, E[:, None] * (Z.T @ Z) * lam[None, :]))
            exact[k] = dr2 / sigma**2 + dlogdet
        scale = theta / z[:space.n_theta]  # θ = c·θ_w for scalar terms
        np.testing.assert_allclose(model.gradient(z)[:space.n_theta], scale * exact,
                                   rtol=1e-6, atol=1e-8)


def test_full_deviance_matches_dense_likelihood():
    model = linkmix.LinkedModel(M2_FORMULA, peptide(SEED_REFS[0]), constraints=M2_CONSTRAINT)
    design = model.design
    z = model.base_start()
    theta, beta, sigma = model.space.user(z)
    ZL = design.Z_sparse().toarray() @ design.Lambda_sparse(theta).toarray()
    V = sigma**2 * (ZL @ ZL.T + np.eye(design.n))
    r = design.y - design.X @ beta
    dense = design.n * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r @ np.linalg.solve(V, r)
    assert model.deviance(z) == pytest.approx(dense, rel=1e-10)


def test_callable_constraint_gives_the_same_fit():
    def link(p):
        g = (math.exp(0.5 * math.log(2) ** 2 * (p[SD2] ** 2 - p[SD1] ** 2))
             * (1 + 2 ** p["t2m2"]) / (1 + 2 ** p["t2m1"]))
        return p["t2"] - g

    data = peptide(SEED_REFS[0])
    by_callable = linkmix.lmer(M2_FORMULA, data, constraints=link)
    assert by_callable.loglik == pytest.approx(m2_fit(SEED_REFS[0]).loglik, abs=1e-8)
    assert by_callable.params.estimate["t2"] == pytest.approx(
        m2_fit(SEED_REFS[0]).params.estimate["t2"], abs=1e-5)


def test_trust_constr_reaches_the_same_optimum():
    ref = SEED_REFS[2]
    fit = linkmix.lmer(M2_FORMULA, peptide(ref), constraints=M2_CONSTRAINT,
                       method="trust-constr")
    assert fit.objective == pytest.approx(ref["neg2ll"], abs=1e-5)


def test_start_values_by_name():
    fit = linkmix.lmer(M2_FORMULA, peptide(SEED_REFS[0]), constraints=M2_CONSTRAINT,
                       start={"t2": 1.0, "sigma": 0.1, SD1: 0.3})
    assert fit.objective == pytest.approx(SEED_REFS[0]["neg2ll"], abs=1e-5)
    assert fit.runs[0].x_initial[fit.space.n_theta + 1] == pytest.approx(1.0)  # z = (θ, β, log σ)


@pytest.mark.parametrize("constraint, message", [
    ("t2 == sd_t3 * 2", "unknown parameter 'sd_t3'"),
    (f"t2 == {SD1} * 2", "in backticks"),
    ("t2 = 1", "cannot parse"),
    ("t2 + 1", "must be an equation"),
    ("t2 == __import__('os').getcwd()", "not allowed|unknown function"),
    ("t2 == t2m1.real", "not allowed"),
    ("t2 == gamma(t2m1)", "unknown function 'gamma'"),
    ("t2 == `t2m1", "unclosed backtick"),
])
def test_bad_constraint_strings_are_named(constraint, message):
    with pytest.raises(ConstraintError, match=message):
        linkmix.lmer(M2_FORMULA, peptide(SEED_REFS[0]), constraints=constraint)


def test_constraint_that_raises_or_returns_nan():
    data = peptide(SEED_REFS[0])

    def broken(p):
        return math.sqrt(-1 - p["sigma"])

    with pytest.raises(ConstraintError, match="constraint 'broken' raised ValueError"):
        linkmix.lmer(M2_FORMULA, data, constraints=broken)
    with pytest.raises(ConstraintError, match="returned"):
        linkmix.lmer(M2_FORMULA, data, constraints=lambda p: float("nan"))
    with pytest.raises(ConstraintError, match="unknown parameter 'c2'"):
        linkmix.lmer(M2_FORMULA, data, constraints=lambda p: p["c2"] - 1)


def test_infeasible_constraints_are_reported():
    data = peptide(SEED_REFS[0])
    with pytest.raises(FitError, match="could not be satisfied"):
        linkmix.lmer(M2_FORMULA, data, constraints=["t2 == 1", "t2 == 2"])
    with pytest.raises(FitError, match="could not be satisfied"):
        linkmix.lmer(M2_FORMULA, data, constraints="sigma <= -1")


def test_bad_mean_and_options():
    data = peptide(SEED_REFS[0])
    with pytest.raises(ConstraintError, match="returned shape"):
        linkmix.lmer(M1_FORMULA, data, mean=lambda p, d: np.ones(3))
    with pytest.raises(ConstraintError, match="unknown parameter 'nosuch'"):
        linkmix.lmer(M1_FORMULA, data, mean="nosuch * 2")
    with pytest.raises(FitError, match="maximum likelihood"):
        linkmix.lmer(M1_FORMULA, data, mean=M1_MEAN, REML=True)


def test_cli_linked_fit_writes_json(tmp_path, capsys):
    csv = tmp_path / "peptide.csv"
    data = datasets.simulate_peptide(**datasets.THREE_OPTIMA)
    data.to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    code = cli_main(["fit", str(csv), "--formula", M2_FORMULA, "--factor", "treatment",
                     "--factor", "replicate", "--constraint", M2_CONSTRAINT, "--starts", "15",
                     "--json", str(out), "--lrt"])
    assert code == 0
    text = capsys.readouterr().out
    assert "NOT IDENTIFIED" in text and "Likelihood-ratio test" in text
    record = json.loads(out.read_text())
    for key in ("loglik", "params", "constraint_residuals", "converged", "optima", "lrt"):
        assert key in record
    assert len([o for o in record["optima"]
                if abs(o["loglik"] - record["loglik"]) < 1e-5]) == 3
    assert record["lrt"]["df"] == 0


def test_cli_mean_and_bad_constraint(tmp_path, capsys):
    csv = tmp_path / "peptide.csv"
    datasets.simulate_peptide(2).to_csv(csv, index=False)
    assert cli_main(["fit", str(csv), "--formula", M1_FORMULA, "--factor", "treatment",
                     "--factor", "replicate", "--mean", M1_MEAN]) == 0
    assert "Linked mean" in capsys.readouterr().out
    assert cli_main(["fit", str(csv), "--formula", M2_FORMULA, "--factor", "treatment",
                     "--factor", "replicate", "--constraint", "t2 == nosuch"]) == 2
    assert "unknown parameter 'nosuch'" in capsys.readouterr().err


def test_seed_example_command(capsys):
    assert cli_main(["example", "--starts", "3"]) == 0
    out = capsys.readouterr().out
    assert "M1 and M2 maximum log-likelihoods" in out and "Uniqueness (M2)" in out


def test_every_json_parameter_name_works_in_a_constraint():
    data = datasets.load("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    names = linkmix.lmer(formula, data, REML=False).to_dict()["params"]
    model_names = linkmix.LinkedModel(formula, data, constraints="sigma >= 0").space.names
    assert list(names) == model_names
    for name in names:
        quoted = name if name.isidentifier() else f"`{name}`"
        model = linkmix.LinkedModel(formula, data, constraints=f"{quoted} >= -1e9")
        assert model.constraints[0].parameters_used == [name]


def test_linked_fit_random_effects_and_residuals():
    fit = m2_fit(SEED_REFS[0])
    re = fit.ranef()["replicate"]
    assert list(re.columns) == ["treatment[1]", "treatment[2]"] and re.shape == (4, 2)
    # b̃ = ΛΛ'Z'V₀⁻¹(y − Xβ̂), V₀ = I + ZΛΛ'Z', by dense algebra
    d = fit.design
    ZL = d.Z_sparse().toarray() @ d.Lambda_sparse(fit.theta).toarray()
    r = d.y - d.X @ fit.beta.to_numpy()
    b = d.Lambda_sparse(fit.theta).toarray() @ (ZL.T @ np.linalg.solve(ZL @ ZL.T + np.eye(d.n), r))
    np.testing.assert_allclose(fit.fitted(), d.X @ fit.beta.to_numpy() + d.Z_sparse() @ b,
                               rtol=1e-9)
    # an unconstrained linked fit's modes equal the plain ML fit's
    data = datasets.load("sleepstudy")
    plain = linkmix.lmer("Reaction ~ Days + (Days | Subject)", data, REML=False)
    linked = linkmix.lmer("Reaction ~ Days + (Days | Subject)", data, constraints="sigma >= 0")
    np.testing.assert_allclose(linked.ranef()["Subject"], plain.ranef()["Subject"], atol=2e-2)
