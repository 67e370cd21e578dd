"""The symbolic analysis and layouts of the blocked engine's Schur complement.

Elimination tree, postorder and the structure of L against a dense Cholesky of random
matrices with the same pattern; supernodes against their definition; the layouts'
positions; the automatic choice of engine.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

import linkmix
from linkmix import _symbolic, datasets, schur
from linkmix.cli import ENGINE_CHOICES
from linkmix.design import build_design
from linkmix.engine import ENGINES, BlockedEngine, cheapest_engine


def random_pattern(n, density, seed):
    """A symmetric CSC pattern with a full diagonal, and an SPD matrix on it."""
    rng = np.random.default_rng(seed)
    B = sp.random(n, n, density=density, random_state=rng, format="csc")
    B = (B + B.T).tocsc()
    B.data = rng.uniform(0.1, 1.0, B.nnz)
    A = (B + sp.diags(np.asarray(abs(B).sum(axis=0)).ravel() + 1.0)).tocsc()
    A.sort_indices()
    pattern = sp.csc_matrix((A.data, A.indices.astype(np.int32), A.indptr.astype(np.int32)),
                            shape=A.shape)
    return pattern, A.toarray()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 10_000))
def test_structure_matches_a_dense_cholesky(n, density, seed):
    pattern, A = random_pattern(n, density, seed)
    L = np.linalg.cholesky(A)
    parent = _symbolic.elimination_tree(pattern.indptr, pattern.indices)
    Lp, Li = _symbolic.factor_structure(pattern.indptr, pattern.indices, parent)
    for j in range(n):
        below = np.flatnonzero(np.abs(L[j + 1:, j]) > 0) + j + 1
        np.testing.assert_array_equal(Li[Lp[j]:Lp[j + 1]], below)
        assert parent[j] == (below[0] if len(below) else -1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 10_000))
def test_postorder_keeps_subtrees_together_and_the_fill(n, density, seed):
    pattern, A = random_pattern(n, density, seed)
    parent = _symbolic.elimination_tree(pattern.indptr, pattern.indices)
    order = _symbolic.postorder(parent)
    assert sorted(order) == list(range(n))
    position = np.empty(n, dtype=int)
    position[order] = np.arange(n)
    for j in range(n):  # a parent comes after its children ...
        if parent[j] >= 0:
            assert position[parent[j]] > position[j]
    descendants = {j: {j} for j in range(n)}
    for j in order:
        if parent[j] >= 0:
            descendants[parent[j]] |= descendants[j]
    for j in range(n):  # ... and every subtree is a run of consecutive places
        places = sorted(position[list(descendants[j])])
        assert places == list(range(places[0], places[0] + len(places)))
    fill = lambda M: int(np.count_nonzero(np.abs(np.linalg.cholesky(M)) > 0))
    assert fill(A[np.ix_(order, order)]) == fill(A)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), density=st.floats(0.0, 0.2), seed=st.integers(0, 10_000),
       relax=st.booleans())
def test_supernodes_nest(n, density, seed, relax):
    """Within a supernode, each column's structure lies in the supernode's columns and
    the structure below its last column; without relaxation the columns' structures
    are exactly nested (no explicit zeros)."""
    pattern, A = random_pattern(n, density, seed)
    parent = _symbolic.elimination_tree(pattern.indptr, pattern.indices)
    order = _symbolic.postorder(parent)
    A = A[np.ix_(order, order)]
    pattern = sp.csc_matrix(A)
    pattern = sp.csc_matrix((pattern.data, pattern.indices.astype(np.int32),
                             pattern.indptr.astype(np.int32)), shape=A.shape)
    parent = _symbolic.elimination_tree(pattern.indptr, pattern.indices)
    Lp, Li = _symbolic.factor_structure(pattern.indptr, pattern.indices, parent)
    first = _symbolic.supernodes(parent, Lp, relax, 0)
    assert first[0] == 0 and first[-1] == n and np.all(np.diff(first) > 0)
    for f, l in zip(first[:-1], first[1:]):
        rows = set(range(f, l)) | set(Li[Lp[l - 1]:Lp[l]].tolist())
        for j in range(f, l):
            column = set(Li[Lp[j]:Lp[j + 1]].tolist()) | {j}
            assert column <= rows
            if not relax:
                assert column == {r for r in rows if r >= j}


@pytest.fixture(scope="module")
def crossed_design():
    return build_design("y ~ 1 + service + (1 | s) + (1 | d) + (1 | c)",
                        datasets.simulate_ratings(20_000, 3, seed=1, missing_rate=0.0))


def test_layout_positions_cover_the_schur_pattern(crossed_design):
    """Every entry of S's pattern (H'H, X and y dense) has its own place in the panels."""
    engine = BlockedEngine(crossed_design, ordering="amd")
    layout, q2, p = engine.layout, engine.q2, engine.p
    m = q2 + p + 1
    H = schur.level_incidence(engine._codes1, _terms_rows(crossed_design), engine.nlev, q2)
    pattern = sp.coo_matrix(H.T @ H)
    inverse = layout.inverse
    rows, cols = inverse[pattern.row], inverse[pattern.col]
    keep = rows >= cols
    dense_rows = np.repeat(np.arange(q2, m), m)
    dense_cols = np.tile(np.arange(m), p + 1)
    keep_dense = dense_rows >= dense_cols
    all_rows = np.concatenate([rows[keep], dense_rows[keep_dense]])
    all_cols = np.concatenate([cols[keep], dense_cols[keep_dense]])
    positions = layout.positions(all_rows, all_cols)
    assert len(np.unique(positions)) == len(positions)
    assert positions.min() >= 0 and positions.max() < layout.size
    # a position lands in its column's panel, at its row
    for r, c, pos in zip(all_rows[::97], all_cols[::97], positions[::97]):
        J = layout.snode_of[c]
        nr = layout.super_rows_ptr[J + 1] - layout.super_rows_ptr[J]
        offset = pos - layout.panel_off[J]
        assert offset // nr == c - layout.super_first[J]
        assert layout.super_rows[layout.super_rows_ptr[J] + offset % nr] == r
    assert layout.flops < schur.dense_layout(q2, p).flops


def _terms_rows(design):
    """Each observation's rows among the later terms' random effects (terms' order)."""
    offset, columns = 0, []
    for term in design.terms[1:]:
        columns.append(offset + term.codes[:, None] * term.k + np.arange(term.k))
        offset += term.q
    return np.hstack(columns).astype(np.int64)


def test_sparse_and_dense_layouts_factor_alike(crossed_design):
    theta = np.array([0.6, 0.4, 0.2])
    dense = BlockedEngine(crossed_design)
    sparse = BlockedEngine(crossed_design, ordering="amd")
    assert len(sparse.layout.super_first) > 2
    for engine in (dense, sparse):
        assert engine.update(theta)
    assert sparse.logdet_L == pytest.approx(dense.logdet_L, rel=1e-12)
    assert sparse.prss() == pytest.approx(dense.prss(), rel=1e-12)
    np.testing.assert_allclose(sparse.beta_hat(), dense.beta_hat(), rtol=1e-11)
    np.testing.assert_allclose(sparse.conditional_modes(sparse.beta_hat()),
                               dense.conditional_modes(dense.beta_hat()), rtol=1e-9,
                               atol=1e-12)


def test_large_panels_factor_on_one_blas_thread(crossed_design, monkeypatch):
    """Panels over ``THREADED_PANEL_LIMIT`` rows (OpenBLAS's threaded dsyrk crashes on
    large orders) are factored under a one-thread limit, to the same numbers (threaded
    BLAS sums in another order: the last bit may differ)."""
    from linkmix import engine as engines
    theta = np.array([0.6, 0.4, 0.2])
    usual = BlockedEngine(crossed_design)
    monkeypatch.setattr(engines, "THREADED_PANEL_LIMIT", 10)
    limited = BlockedEngine(crossed_design)
    assert limited._one_thread and not usual._one_thread
    for engine in (usual, limited):
        assert engine.update(theta)
    assert limited.logdet_L == pytest.approx(usual.logdet_L, rel=1e-13)
    assert limited.prss() == pytest.approx(usual.prss(), rel=1e-13)
    np.testing.assert_allclose(limited.logdet_gradient(), usual.logdet_gradient(), rtol=1e-13)


def test_automatic_choice(crossed_design):
    """Small problems keep the dense Schur complement unmeasured; a design whose sparse
    layout needs several times less work than the dense one takes it."""
    small = build_design("y ~ 1 + (1 | s) + (1 | dept)",
                         datasets.simulate_ratings(300, 2, missing_rate=0.0))
    assert cheapest_engine(small).kind == "blocked"
    separate = build_design("y ~ 1 + (1 | s) + (1 | d)",  # every rating at home
                            datasets.simulate_ratings(60_000, 2, n_departments=30, at_home=1.0,
                                                     missing_rate=0.0))
    engine = cheapest_engine(separate)
    assert engine.kind == "blocked-sparse"
    assert engine.layout.flops * 4 < schur.dense_layout(engine.q2, engine.p).flops


def test_engine_choices_written_out_for_the_command_line():
    assert ENGINE_CHOICES == ENGINES


@pytest.mark.parametrize("ordering", ["dense", "amd"])
def test_a_twin_engine_factors_on_its_own(crossed_design, ordering):
    """A twin shares the engine's data and sums and has its own factor: factoring it at
    another θ leaves the engine's factor as it was, and gives a fresh engine's numbers."""
    engine = BlockedEngine(crossed_design, ordering=ordering)
    theta, other = np.array([0.6, 0.4, 0.2]), np.array([0.3, 0.9, 0.5])
    assert engine.update(theta)
    before = (engine.logdet_L, engine.prss(), engine.logdet_gradient().copy())
    twin = engine.twin()
    assert twin.update(other)
    assert (engine.logdet_L, engine.prss()) == before[:2]
    np.testing.assert_array_equal(engine.logdet_gradient(), before[2])
    fresh = BlockedEngine(crossed_design, ordering=ordering)
    assert fresh.update(other)
    assert twin.logdet_L == fresh.logdet_L and twin.prss() == fresh.prss()
    np.testing.assert_array_equal(twin.logdet_gradient(), fresh.logdet_gradient())
    np.testing.assert_array_equal(twin.prss_gradient(), fresh.prss_gradient())
    assert twin.Sp is not engine.Sp and twin.D1 is engine.D1  # its factor, shared sums


def test_the_checks_on_two_threads_give_the_same_fit(crossed_design, monkeypatch):
    """With ``workers=2`` half the checks' stencil is evaluated on a second thread (by a
    twin engine), and within the optimiser's evaluations ∂r²/∂θ alongside the traces;
    the fit is the same to the last bit."""
    import threading

    from linkmix import model as models
    from linkmix.deviance import Deviance

    monkeypatch.setattr(models, "GRADIENT_ABOVE", 0.0)  # this design's evaluations are cheap
    threads_seen, prss_threads = set(), set()
    evaluate, prss = Deviance.value_and_gradient, BlockedEngine.prss_gradient

    def recorded(self, theta, helper=None):
        threads_seen.add(threading.get_ident())
        return evaluate(self, theta, helper)

    def recorded_prss(self):
        prss_threads.add(threading.get_ident())
        return prss(self)

    monkeypatch.setattr(Deviance, "value_and_gradient", recorded)
    monkeypatch.setattr(BlockedEngine, "prss_gradient", recorded_prss)
    fits = {}
    for workers in (1, 2):
        threads_seen.clear()
        prss_threads.clear()
        # one layout for both: "auto" times the layouts, and may pick either
        model = linkmix.LinearMixedModel.from_design(crossed_design, REML=False,
                                                     engine="blocked-sparse")
        fits[workers] = model.fit(workers=workers)
        assert len(threads_seen) == workers
        assert (prss_threads - threads_seen != set()) == (workers == 2)
    one, two = fits[1], fits[2]
    assert one.optsummary.optimizer == "lbfgs" and one.converged and two.converged
    assert one.objective == two.objective
    np.testing.assert_array_equal(one.theta, two.theta)
    np.testing.assert_array_equal(one.optsummary.hessian_eigenvalues,
                                  two.optsummary.hessian_eigenvalues)


def test_a_batch_leaves_its_fits_one_thread_for_evaluations():
    from linkmix.threads import evaluation_workers, one_blas_thread

    with one_blas_thread():
        assert evaluation_workers() == 1


def test_the_automatic_choice_times_real_factorisations(crossed_design):
    """Both timed runs factor (the engine keeps its factor at the same θ otherwise, and
    the second run then timed nothing, so the first layout timed always won)."""
    from linkmix.engine import _factor_seconds

    engine = BlockedEngine(crossed_design)
    calls = []
    blas = engine._blas
    engine._blas = lambda method, *args: calls.append(method) or blas(method, *args)
    _factor_seconds(engine, crossed_design.theta_start())
    assert len(calls) == 2
