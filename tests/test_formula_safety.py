"""Formulas cannot run code: every term is checked against a whitelist before evaluation."""

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import linkmix
from linkmix.cli import main as cli_main
from linkmix.formula import FORMULA_FUNCTIONS, check_terms


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"y": rng.normal(size=40), "x": rng.uniform(1, 3, size=40),
                         "g": np.repeat(list("abcdefgh"), 5), "a": np.tile(["p", "q"], 20)})


def payloads(path):
    """The issue's payloads and relatives; each would create ``path`` if it ran."""
    p = repr(str(path))
    return [f"y ~ x + I(np._core._methods.os.system('touch ' + {p})) + (1|g)",
            f"y ~ x + I(np.save({p}, x)) + (1|g)",
            f"y ~ x + I(__builtins__['open']({p},'w').write('x')) + (1|g)",
            f"y ~ x + (1 + I(np.save({p}, x)) | g)",
            f"y ~ x + {{__import__('os').system('touch ' + {p})}} + (1|g)",
            f"y ~ x + C(a, contr.treatment(base=open({p}, 'w'))) + (1|g)",
            f"y ~ x + log(x, out=open({p}, 'w')) + (1|g)",
            f"y ~ poly(x, _context=open({p}, 'w')) + (1|g)",
            f"y ~ I(x) + I([open({p}, 'w') for _ in x]) + (1|g)",
            f"y ~ I((lambda: open({p}, 'w'))()) + (1|g)",
            "y ~ I(x.__class__) + (1|g)", "y ~ x.__class__ + (1|g)", "y ~ I(x[0]) + (1|g)",
            "y ~ C(a, __builtins__) + (1|g)",
            f"__import__('os').system('touch ' + {p}) ~ x + (1|g)",
            f"y ~ x + (1 | __import__('os').system({p}))"]


def test_issue_payloads_are_refused_and_never_run(data, tmp_path):
    target = tmp_path / "created"
    for formula in payloads(target):
        with pytest.raises((linkmix.FormulaError, linkmix.DataError)):
            linkmix.lmer(formula, data)
        assert not target.exists(), formula


def test_refusal_names_the_offending_piece(data):
    with pytest.raises(linkmix.FormulaError, match=r"'np\.save' in the term"):
        linkmix.lmer("y ~ x + I(np.save('F', x)) + (1|g)", data)
    with pytest.raises(linkmix.FormulaError, match=r"subscript"):
        linkmix.lmer("y ~ I(x[0]) + (1|g)", data)
    with pytest.raises(linkmix.FormulaError, match="random-effects term"):
        linkmix.lmer("y ~ x + (1 + I(np.save('F', x)) | g)", data)


@pytest.mark.parametrize("command", ["fit", "batch", "nlfit"])
def test_cli_refuses_payloads_before_running_them(data, tmp_path, capsys, command):
    csv = tmp_path / "d.csv"
    data.assign(grp=np.repeat(["A", "B"], 20)).to_csv(csv, index=False)
    target = tmp_path / "created"
    bad = f"I(__builtins__['open']({str(target)!r},'w').write('x'))"
    if command == "fit":
        args = ["fit", str(csv), "-f", f"y ~ x + {bad} + (1|g)"]
    elif command == "batch":
        args = ["batch", str(csv), "--by", "grp", "-f", f"y ~ x + {bad} + (1|g)",
                "-o", str(tmp_path / "out.csv")]
    else:
        args = ["nlfit", str(csv), "-f", "y ~ SSlogis(x, Asym, xmid, scal)", "-r", "Asym | g",
                "--fixed", f"Asym=1 + {bad}"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("linkmix: error:") and "Traceback" not in err
    assert not target.exists()


def test_nonlinear_fixed_and_random_parts_are_checked(data, tmp_path):
    orange = linkmix.datasets.load("Orange")
    with pytest.raises(linkmix.FormulaError, match="calls are limited"):
        linkmix.nlmer("circumference ~ SSlogis(age, Asym, xmid, scal)", orange,
                      random="Asym | Tree", fixed={"Asym": "1 + I(eval('1'))"})
    with pytest.raises(linkmix.FormulaError, match="must be a name"):
        linkmix.nlmer("circumference ~ SSlogis(age, Asym, xmid, scal)", orange,
                      random="Asym | Tree.__class__()")
    with pytest.raises(linkmix.FormulaError, match="must be a name"):
        linkmix.nlmer("circumference ~ SSlogis(open('F'), Asym, xmid, scal)", orange,
                      random="Asym | Tree")


@pytest.mark.parametrize("formula, names", [
    ("y ~ x + I(x**2) + log(x) + sqrt(x) + abs(x - 2) + (1|g)",
     ["(Intercept)", "x", "I(x ** 2)", "log(x)", "sqrt(x)", "abs(x - 2)"]),
    ("y ~ C(a, Treatment('q')) + (1|g)", ["(Intercept)", "C(a, Treatment('q'))[T.p]"]),
    ("y ~ C(a, contr.sum) + poly(x, degree=2) + (1|g)",
     ["(Intercept)", "C(a, contr.sum)[S.p]", "poly(x, degree=2)[1]", "poly(x, degree=2)[2]"]),
    ("y ~ I(x > 2) + center(x) + scale(x ** 2) + (1 + x|g)",
     ["(Intercept)", "I(x > 2)", "center(x)", "scale(x ** 2)"]),
    ("y ~ a*x + (1|g)", ["(Intercept)", "a[T.q]", "x", "a[T.q]:x"]),
    ("y ~ {x + 1} + log2(x) + exp(x) + (1|g)", ["(Intercept)", "x + 1", "log2(x)", "exp(x)"]),
    ("y ~ log10(x) + log1p(x) + expm1(x) + (1|g)",
     ["(Intercept)", "log10(x)", "log1p(x)", "expm1(x)"]),
])
def test_documented_transforms_still_work(data, formula, names):
    fit = linkmix.lmer(formula, data)
    assert list(fit.beta.index) == names


def test_backticked_and_dotted_columns(data):
    frame = data.rename(columns={"x": "my x", "a": "a.b"})
    fit = linkmix.lmer("y ~ `my x` + log(`my x`) + `a.b` + (1|g)", frame)
    assert list(fit.beta.index) == ["(Intercept)", "my x", "log(`my x`)", "a.b[T.q]"]


# ---- property: injecting a call, attribute or subscript anywhere is refused ----------

_CALLEES = ["open", "eval", "exec", "compile", "getattr", "__import__", "print", "globals",
            "np.save", "os.system", "pd.read_csv", "x.tolist", "type", "vars"]
_TEMPLATES = ["I({p})", "log({p})", "C({p})", "poly({p}, 2)", "I(x + {p})", "I(-{p} * 2)",
              "center(I({p}))", "C(a, Treatment({p}))", "{{{p}}}"]
_BASES = ["y ~ {t} + (1|g)", "y ~ x + {t} + (1|g)", "y ~ a*x + {t} + (1 + x|g)",
          "y ~ x + (1 + {t} | g)", "y ~ x + (0 + {t} || g)"]


@st.composite
def injections(draw, path):
    kind = draw(st.sampled_from(["call", "attribute", "subscript", "dunder"]))
    target = repr(str(path))
    if kind == "call":
        payload = f"{draw(st.sampled_from(_CALLEES))}({target}, 'w')"
    elif kind == "attribute":
        obj = draw(st.sampled_from(["x", "np", "a", "(x + 1)", "log(x)"]))
        payload = f"{obj}.{draw(st.sampled_from(['real', '__class__', 'save', 'values']))}"
    elif kind == "subscript":
        obj = draw(st.sampled_from(["x", "__builtins__", "a", "globals()"]))
        payload = f"{obj}[{draw(st.sampled_from(['0', repr('open'), '1:2']))}]"
    else:
        payload = draw(st.sampled_from(["__builtins__", "__import__", "__class__", "_x"]))
    term = draw(st.sampled_from(_TEMPLATES)).format(p=payload)
    return draw(st.sampled_from(_BASES)).format(t=term)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_injected_code_is_always_refused(data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("inject")
    target = directory / "created"
    formula = data.draw(injections(target))
    frame = pd.DataFrame({"y": np.arange(20.0), "x": np.arange(20.0) % 7,
                          "g": np.repeat(list("abcd"), 5), "a": np.tile(["p", "q"], 10)})
    with pytest.raises((linkmix.FormulaError, linkmix.DataError)):
        linkmix.lmer(formula, frame)
    assert not target.exists() and not os.listdir(directory), formula


def test_whitelist_is_what_the_documentation_says():
    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "guide",
                             "formulas.md")).read()
    for name in FORMULA_FUNCTIONS:
        assert f"`{name}`" in text or f"`{name}(" in text, name
    assert check_terms("1 + log(x) + C(a, Sum)", "t") == {"x", "a"}
