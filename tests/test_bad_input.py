"""Every bad input: one clear line, exit status 2 (CLI) or linkmix's own exception (API),
checked before any fitting; strict JSON."""

import json

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix import ArgumentError, ConstraintError, DataError
from linkmix.cli import main as cli_main
from linkmix.examples import M1_FORMULA, M2_CONSTRAINT, M2_FORMULA

PLAIN = "x ~ 1 + t2 + m2 + t2m1 + (0 + treatment || replicate)"
NONLINEAR = ["-f", "circumference ~ SSlogis(age, Asym, xmid, scal)", "-r", "Asym | Tree"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    peptide = root / "peptide.csv"
    linkmix.datasets.simulate_peptide(seed=1).to_csv(peptide, index=False)
    table, _ = linkmix.datasets.simulate_experiment(6, seed=1)
    table["Intensity"] = (2 ** table.x).astype(object)
    table.loc[3, "Intensity"] = "abc"
    batch = root / "batch.csv"
    table.to_csv(batch, index=False)
    orange = root / "orange.csv"
    linkmix.datasets.load("Orange").to_csv(orange, index=False)
    empty = root / "empty.csv"
    empty.write_text("")
    return {"root": root, "peptide": str(peptide), "batch": str(batch),
            "orange": str(orange), "empty": str(empty)}


def run(args, capsys):
    """(exit status, stderr) of one CLI call (argparse's usage errors exit directly)."""
    try:
        code = cli_main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, fragment):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linkmix: error:"), err
    assert fragment in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, fragment", [
    (lambda f: ["fit", f["empty"], "-f", PLAIN], "is empty"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--starts", "0", "-c", "t2 == 1"],
     "--starts: must be at least 1, not 0"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--starts", "-2"], "at least 1, not -2"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--starts", "2.5"], "not a whole number"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--json", str(f["root"] / "no" / "x.json")],
     "does not exist"),
    (lambda f: ["batch", f["batch"], "--by", "peptide", "-f", PLAIN, "-o",
                str(f["root"] / "no" / "r.csv")], "does not exist"),
    (lambda f: ["batch", f["batch"], "--by", "peptide", "-f", PLAIN, "-o",
                str(f["root"] / "r.xlsx")], "unsupported format .xlsx"),
    (lambda f: ["batch", f["batch"], "--by", "peptide", "-f",
                "log2Intensity ~ 1 + t2 + (1|replicate)", "--log2", "Intensity", "-o",
                str(f["root"] / "r.csv")], "row 3 has 'abc'"),
    (lambda f: ["batch", f["batch"], "--by", "peptide", "-f", PLAIN, "--jobs", "0", "-o",
                str(f["root"] / "r.csv")], "-1 (all cores) or at least 1"),
    (lambda f: ["nlfit", f["orange"], *NONLINEAR, "--nagq", "0"], "at least 1, not 0"),
    (lambda f: ["nlfit", f["orange"], *NONLINEAR, "--start", "Asym=abc"], "not a number"),
    (lambda f: ["nlfit", f["orange"], *NONLINEAR, "--fixed", "Asym"], "must read PARAM=RHS"),
    (lambda f: ["nlfit", f["orange"], NONLINEAR[0], NONLINEAR[1], "-r", "Asym | Nope"],
     "in the random part 'Asym | Nope'"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "-c", "t2 == 'a'"], "'a' is text"),
    (lambda f: ["batch", f["batch"], "--by", "peptide", "-f", PLAIN, "-c", "t2 == Conditon",
                "-o", str(f["root"] / "r.csv")], "unknown parameter 'Conditon'"),
    (lambda f: ["batch", f["batch"], "--by", "peptide", "-f", PLAIN, "-c",
                "t2 == sd[treatment|replicate]", "-o", str(f["root"] / "r.csv")],
     "in backticks"),
    (lambda f: ["fit", f["batch"], "-f", "Intensity ~ 1 + t2 + (1|replicate)"], "(e.g. 'abc')"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--factor", "Nope"], "unknown column(s) ['Nope']"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--engine", "gpu"], "invalid choice"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "-c", "t2 = 1"],
     "an equation is written with '=='"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "-c", "t2 => 1"],
     "an inequality is written with '>=' or '<='"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--ml", "--ddf", "kenward-roger"],
     "refit without --ml or use --ddf satterthwaite"),
    (lambda f: ["fit", f["peptide"], "-f", PLAIN, "--contrast", "t2 - nope"],
     "cannot read the contrast 't2 - nope' at position 6"),
])
def test_cli_bad_input_is_one_line_exit_2(files, capsys, args, fragment):
    code, err = run(args(files), capsys)
    assert_one_line_error(code, err, fragment)


def test_bad_output_fails_before_fitting(files, capsys, monkeypatch):
    """Output paths are judged before any data is read (no fit is lost at the end)."""
    import linkmix.io

    def no_read(*args, **kwargs):
        raise AssertionError("data were read before the output path was checked")
    monkeypatch.setattr(linkmix.io, "read_table", no_read)
    code, err = run(["batch", files["batch"], "--by", "peptide", "-f", PLAIN, "-o",
                     str(files["root"] / "r.xlsx")], capsys)
    assert_one_line_error(code, err, ".xlsx")
    code, err = run(["fit", files["peptide"], "-f", PLAIN, "--json",
                     str(files["root"] / "no" / "x.json")], capsys)
    assert_one_line_error(code, err, "does not exist")


def test_parquet_without_an_engine_fails_up_front(files, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    code, err = run(["batch", files["batch"], "--by", "peptide", "-f", PLAIN, "-o",
                     str(files["root"] / "r.parquet")], capsys)
    assert_one_line_error(code, err, "needs the Python package 'pyarrow'")


def test_batch_that_fits_nothing_exits_non_zero(files, capsys):
    out = files["root"] / "nothing.csv"
    code = cli_main(["batch", files["batch"], "--by", "peptide", "-f",
                     "x ~ 1 + t2 + (1|peptide)", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "no group could be fitted" in err and out.exists()


def test_json_output_is_strict(files, capsys):
    """NaN (e.g. a gradient never computed, an SE that does not exist) is written as null."""
    out = files["root"] / "fit.json"
    assert cli_main(["fit", files["peptide"], "-f", PLAIN, "--ml", "--json", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    fit = linkmix.lmer(M2_FORMULA, linkmix.datasets.simulate_peptide(seed=1),
                       constraints=M2_CONSTRAINT)
    record = json.loads(fit.to_json(), parse_constant=lambda c: pytest.fail(c))
    assert record["fixef"]


# ---- the Python API -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def peptide():
    return linkmix.datasets.simulate_peptide(seed=1)


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(constraints=5), ConstraintError, "not int"),
    (dict(constraints=M2_CONSTRAINT, n_starts=2.5), ArgumentError, "whole number"),
    (dict(constraints=M2_CONSTRAINT, n_starts=0), ArgumentError, "at least 1"),
    (dict(REML="yes"), ArgumentError, "True or False"),
    (dict(REML=1), ArgumentError, "True or False"),
    (dict(engine="gpu"), ArgumentError, "engine must be"),
    (dict(missing="keep"), ArgumentError, "missing must be"),
    (dict(optimizer="nelder"), ArgumentError, "optimizer must be"),
    (dict(maxevals=10), ArgumentError, "unknown option(s) ['maxevals']"),
    (dict(constraints=M2_CONSTRAINT, method="BFGS"), ArgumentError, "method must be"),
    (dict(constraints=M2_CONSTRAINT, seed=-1), ArgumentError, "seed must be at least 0"),
    (dict(constraints=M2_CONSTRAINT, maxeval=10), ArgumentError, "plain fits only"),
    (dict(constraints="t2 == 'a'"), ConstraintError, "is text"),
])
def test_api_bad_options(peptide, kwargs, error, fragment):
    formula = M2_FORMULA if "constraints" in kwargs else PLAIN
    with pytest.raises(error, match=None) as info:
        linkmix.lmer(formula, peptide, **kwargs)
    assert fragment in str(info.value)
    assert isinstance(info.value, linkmix.LinkmixError)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(n_jobs=0), "n_jobs"), (dict(n_jobs=1.5), "n_jobs"), (dict(level=95), "level"),
    (dict(REML="no"), "REML"), (dict(n_starts=0), "n_starts"), (dict(chunk_size=0), "chunk_size"),
    (dict(progress="yes"), "progress"), (dict(engine="x"), "engine"),
])
def test_fit_groups_bad_options(kwargs, fragment):
    data, _ = linkmix.datasets.simulate_experiment(3, seed=1)
    with pytest.raises(ArgumentError, match=fragment):
        linkmix.fit_groups(data, "peptide", PLAIN, **kwargs)


def test_fit_groups_checks_links_once_up_front():
    data, _ = linkmix.datasets.simulate_experiment(3, seed=1)
    with pytest.raises(ConstraintError, match="unknown parameter 'nope'"):
        linkmix.fit_groups(data, "peptide", M2_FORMULA, constraints="t2 == nope")
    with pytest.raises(ConstraintError, match="unknown function"):
        linkmix.fit_groups(data, "peptide", M1_FORMULA, mean="gamma(t2m1)")
    # a parameter only some groups have is left to the groups: PEP00000 has levels a, b;
    # the others a, c
    other = np.where(data.peptide == "PEP00000", "b", "c")
    table = data.assign(kind=np.where(np.arange(len(data)) % 2 == 0, "a", other))
    rows = linkmix.fit_groups(table, "peptide", "x ~ 1 + kind + (1|replicate)",
                              constraints="`kind[T.c]` >= -100").drop_duplicates("peptide")
    assert "unknown parameter 'kind[T.c]'" in rows.error.iloc[0]
    assert rows.error.iloc[1:].isna().all()


def test_non_numeric_response_shows_a_bad_value():
    frame = pd.DataFrame({"y": ["1.5", "2.0", "n/a?", "3"] * 3, "g": list("abc") * 4})
    with pytest.raises(DataError, match=r"e\.g\. 'n/a\?'"):
        linkmix.lmer("y ~ 1 + (1|g)", frame)
    with pytest.raises(DataError, match=r"e\.g\. 'n/a\?'"):
        linkmix.fit_groups(frame.assign(p="x"), "p", "y ~ 1 + (1|g)")


def test_help_and_bad_options_do_not_load_the_numerical_stack(tmp_path):
    """``linkmix --help`` and an option refused before any data is read load neither numpy
    nor the subcommands (linkmix.commands), so they answer at once."""
    import subprocess
    import sys

    probe = ("import sys\nfrom linkmix.cli import main\n"
             "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
             "print(code, 'numpy' in sys.modules, 'linkmix.commands' in sys.modules)")
    missing = str(tmp_path / "no-such-folder" / "fit.json")
    for args, code in ((["--help"], "0"), (["fit", "data.csv", "-f", "y ~ 1", "--json", missing],
                                           "2")):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[-3:] == [code, "False", "False"], out


def test_the_program_exits_fast_with_its_output_whole(tmp_path):
    """The installed program ends a single fit without the interpreter's teardown: its
    printed summary and JSON are whole (flushed first), and its status is the fit's;
    a refused fit still says why (status 2)."""
    import json
    import subprocess
    import sys

    data = tmp_path / "sleep.csv"
    linkmix.datasets.load("sleepstudy").to_csv(data, index=False)
    out = tmp_path / "fit.json"
    run = subprocess.run([sys.executable, "-m", "linkmix.cli", "fit", str(data), "-f",
                          "Reaction ~ Days + (Days | Subject)", "--json", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Random effects:" in run.stdout
    assert run.stdout.rstrip().splitlines()[-1].startswith("optimizer:")  # the last line
    assert json.loads(out.read_text())["objective"] > 0
    bad = subprocess.run([sys.executable, "-m", "linkmix.cli", "fit", str(data), "-f",
                          "Reaction ~ Days + (Days | Nobody)"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Nobody" in bad.stderr


def test_the_program_imports_with_the_collector_paused_then_back_on():
    """The program's own process pauses the cyclic collector while it imports its
    subcommands, then freezes what they made and turns the collector on again."""
    import subprocess
    import sys

    probe = ("import gc; from linkmix import cli; cli._import_commands(own_process=True); "
             "print(gc.isenabled(), gc.get_freeze_count() > 1000)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.stdout.split() == ["True", "True"], run.stderr


def test_fit_tests_contrasts_as_batch_does(files, capsys, tmp_path):
    """``linkmix fit --contrast``: named contrasts and ``pairwise:``, printed and in the
    JSON, the numbers of ``fit.contrast``."""
    data = linkmix.datasets.simulate_msstats(1, seed=1)
    path = tmp_path / "peptide.csv"
    data.to_csv(path, index=False)
    formula = "log2Intensity ~ Condition + Feature + (1|BioReplicate)"
    out = tmp_path / "fit.json"
    code = cli_main(["fit", str(path), "-f", formula, "--contrast", "pairwise:Condition",
                     "--contrast", "Condition[T.C2] - 2*Condition[T.C3]", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Contrasts (satterthwaite t tests):" in text and "Condition[C3] - Condition[C2]" in text
    record = json.loads(out.read_text())["contrasts"]
    fit = linkmix.lmer(formula, data)
    expected = fit.contrast(["Condition[T.C3] - Condition[T.C2]",
                             "Condition[T.C2] - 2*Condition[T.C3]"])
    for label, row in zip(["Condition[C3] - Condition[C2]",
                           "Condition[T.C2] - 2*Condition[T.C3]"], expected.itertuples()):
        assert record[label]["estimate"] == pytest.approx(row.estimate, rel=1e-10)
        assert record[label]["df"] == pytest.approx(row.df, rel=1e-8)


def test_p_values_below_double_precision_print_as_a_bound():
    """R's format.pval: a t of 40 has p = 0 in doubles, printed '< 2.2e-16', not 0."""
    from linkmix.results import format_p

    assert format_p(0.0) == "< 2.2e-16" and format_p(1e-300) == "< 2.2e-16"
    assert format_p(0.01234) == "0.0123" and format_p(float("nan")) == ""
    orange = linkmix.datasets.load("Orange")
    fit = linkmix.nlmer("circumference ~ SSlogis(age, Asym, xmid, scal)", orange,
                        random="Asym | Tree")
    assert "< 2.2e-16" in str(fit.summary()) and " 0 " not in str(fit.summary())
