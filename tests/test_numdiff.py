"""The finite-difference rule (linkmix.numdiff) against closed-form derivatives."""

import numpy as np
import pytest

from linkmix import numdiff


def f(x):
    return np.exp(x[0]) * np.sin(x[1]) + x[0] ** 2 * x[2] + 0.5 * x[2] ** 3


def grad_f(x):
    return np.array([np.exp(x[0]) * np.sin(x[1]) + 2 * x[0] * x[2],
                     np.exp(x[0]) * np.cos(x[1]), x[0] ** 2 + 1.5 * x[2] ** 2])


def hess_f(x):
    e, s, c = np.exp(x[0]), np.sin(x[1]), np.cos(x[1])
    return np.array([[e * s + 2 * x[2], e * c, 2 * x[0]],
                     [e * c, -e * s, 0.0],
                     [2 * x[0], 0.0, 3 * x[2]]])


@pytest.mark.parametrize("x", [[0.3, -1.2, 2.0], [-4.0, 30.0, 0.7], [1.5, 0.2, 10.0]])
def test_gradient_and_hessian_in_the_interior(x):
    x = np.array(x)
    grad, H, interior, steps = numdiff.hessian(f, x, rel_step=1e-4)
    assert interior.tolist() == [0, 1, 2]
    assert steps == pytest.approx([1e-4 * max(1, abs(v)) for v in x])
    scale = max(1.0, np.abs(hess_f(x)).max())
    np.testing.assert_allclose(grad, grad_f(x), rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(H, hess_f(x), rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(numdiff.jacobian(f, x)[0], grad_f(x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(numdiff.curvatures(f, x), np.diag(hess_f(x)), rtol=1e-5,
                               atol=1e-5 * scale)


def test_at_a_lower_bound_steps_stay_inside():
    x = np.array([0.3, -1.2, 0.0])
    lower = np.array([-np.inf, -np.inf, 0.0])
    seen = []

    def watched(z):
        seen.append(z[2])
        return f(z)

    grad, H, interior, _ = numdiff.hessian(watched, x, lower=lower, rel_step=1e-4)
    assert min(seen) >= 0.0 and interior.tolist() == [0, 1]
    np.testing.assert_allclose(grad, grad_f(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(H, hess_f(x)[:2, :2], rtol=1e-5, atol=1e-6)
    seen.clear()
    np.testing.assert_allclose(numdiff.jacobian(watched, x, lower=lower)[0], grad_f(x),
                               rtol=1e-7, atol=1e-8)
    assert min(seen) >= 0.0
    assert numdiff.curvatures(f, x, lower=lower, indices=[2])[0] == pytest.approx(
        hess_f(x)[2, 2], abs=1e-3)  # forward second difference: first order at the bound


def test_rowwise_jacobian_of_a_model_function():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 2)) * [1.0, 100.0]

    def model(P):  # two outputs per row
        return np.column_stack([P[:, 0] * np.exp(P[:, 1] / 100), np.sin(P[:, 0]) * P[:, 1]])

    J = numdiff.rowwise_jacobian(model, X, rel_step=6e-6)
    exact = np.empty((50, 2, 2))
    exact[:, 0, 0] = np.exp(X[:, 1] / 100)
    exact[:, 0, 1] = X[:, 0] * np.exp(X[:, 1] / 100) / 100
    exact[:, 1, 0] = np.cos(X[:, 0]) * X[:, 1]
    exact[:, 1, 1] = np.sin(X[:, 0])
    np.testing.assert_allclose(J, exact, rtol=1e-8, atol=1e-8)
    scalar = numdiff.rowwise_jacobian(lambda P: P[:, 0] ** 2, X)
    np.testing.assert_allclose(scalar[:, 0], 2 * X[:, 0], rtol=1e-7, atol=1e-8)
    second = numdiff.rowwise_jacobian(model, X, rel_step=6e-6, indices=[1])
    np.testing.assert_allclose(second[:, :, 0], exact[:, :, 1], rtol=1e-8, atol=1e-8)
