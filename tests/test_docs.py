"""The README and the documentation stay true: every ```python block of each page runs,
in order, in one namespace per page, and every ```bash block runs in a shell, in a fresh
folder, with this Python's ``linkmix`` program first on PATH; and the site builds from
the sources (MkDocs in strict mode: a broken link, a docstring mkdocstrings cannot read
or a page left out of the navigation fails).

Blocks fenced as ```sh (installing, the test suite itself) and ```text (output) are
shown, not run."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(page: pathlib.Path, language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(page.read_text()) if lang == language]


def page_id(page: pathlib.Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=page_id)
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__example__"}
    for number, code in enumerate(blocks(page, "python"), 1):
        exec(compile(code, f"{page_id(page)}, python block {number}", "exec"), namespace)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=page_id)
def test_shell_examples_run(page, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg",
               PATH=os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                     os.environ.get("PATH", "")]))
    for number, code in enumerate(blocks(page, "bash"), 1):
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (f"{page_id(page)}, bash block {number}:\n{code}\n"
                                     f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}")


def test_every_page_is_in_the_navigation():
    navigation = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        assert str(page.relative_to(ROOT / "docs")) in navigation, page


def test_no_page_points_outside_the_repository():
    for page in [*PAGES, *sorted((ROOT / "src" / "linkmix").glob("*.py"))]:
        text = page.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, page


def test_the_documentation_site_builds(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "fit_groups" in api and "LinearMixedModel" in api and "allow_new_levels" in api
