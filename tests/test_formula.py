"""lme4 formula syntax → specs."""

import pytest

from linkmix import FormulaError, parse_formula
from linkmix.formula import RandomTermSpec


def test_correlated_term_and_fixed_part():
    spec = parse_formula("Reaction ~ 1 + Days + (1 + Days | Subject)")
    assert spec.response == "Reaction"
    assert spec.fixed == "1 + Days"
    assert spec.random == (RandomTermSpec("1 + Days", ("Subject",), False),)


def test_independent_crossed_and_interaction():
    spec = parse_formula("y ~ x + (x || g) + (1 | a:b) + (0 + x | h)")
    assert spec.random == (RandomTermSpec("x", ("g",), True),
                           RandomTermSpec("1", ("a", "b"), False),
                           RandomTermSpec("0 + x", ("h",), False))


def test_nesting_expands_like_lme4():
    spec = parse_formula("y ~ 1 + (1 | a/b/c)")
    assert [t.group for t in spec.random] == [("a",), ("a", "b"), ("a", "b", "c")]


def test_random_only_formula_gets_intercept():
    assert parse_formula("y ~ (1 | g)").fixed == "1"


def test_parenthesised_fixed_terms_stay_fixed():
    spec = parse_formula("y ~ (a + b) + (1 | g)")
    assert spec.fixed == "(a + b)"
    assert len(spec.random) == 1


@pytest.mark.parametrize("text, message", [
    ("y ~ x", "no random-effects term"),
    ("y x + (1|g)", "exactly one '~'"),
    ("~ x + (1|g)", "no response"),
    ("y ~ x + (1|g", "unbalanced"),
    ("y ~ x + (1|)", "no grouping factor"),
    ("y ~ x + ( | g)", "nothing before"),
    ("y ~ x + (1 | g + h)", "grouping factor"),
    ("y ~ x + 1 | g", "outside a parenthesised"),
    ("y ~ x + + (1|g)", "stray"),
    ("", "non-empty"),
])
def test_bad_formulas_are_named(text, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(text)
