"""A batch that is refused leaves nothing behind, one that loses a worker process loses
no group, and one that is interrupted can be resumed: every group in the output once,
with the values of an uninterrupted run.  Workers are killed for real (SIGKILL), as the
out-of-memory killer would."""

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix import batch
from linkmix.cli import main as cli_main

FORMULA = "log2Intensity ~ Condition + (1|BioReplicate)"
pytestmark = pytest.mark.filterwarnings("ignore::linkmix.MissingDataWarning")


@pytest.fixture(scope="module")
def peptides():
    return linkmix.datasets.simulate_msstats(1200, seed=3)


def assert_every_group_once(table, data, by="PeptideSequence"):
    assert set(table[by]) == set(data[by])
    per_group = table.groupby(by).size()
    assert per_group.nunique() == 1  # the same rows for every group: none doubled
    assert not table.duplicated([by, "parameter"]).any()


@pytest.mark.parametrize("output", ["out.csv", "out.parquet"])
def test_a_refused_batch_leaves_no_file(tmp_path, peptides, capsys, output):
    if output.endswith("parquet"):
        pytest.importorskip("pyarrow")
    csv = tmp_path / "peptides.csv"
    peptides.head(300).to_csv(csv, index=False)
    for bad in (["-c", "nosuch == 0"], ["--contrast", "Nope[T.x] - Condition[T.C2]"],
                ["--formula", "log2Intensity ~ Condition + (1|NoSuchColumn)"]):
        code = cli_main(["batch", str(csv), "--by", "PeptideSequence", "-f", FORMULA,
                         "-o", str(tmp_path / output), "--no-progress", *bad])
        assert code == 2 and "linkmix: error:" in capsys.readouterr().err
        assert os.listdir(tmp_path) == ["peptides.csv"]


def test_a_refused_json_output_leaves_no_file(tmp_path, capsys):
    data = tmp_path / "sleep.csv"
    linkmix.datasets.load("sleepstudy").to_csv(data, index=False)
    code = cli_main(["fit", str(data), "-f", "Reaction ~ Days + (1 | Nope)",
                     "--json", str(tmp_path / "fit.json")])
    assert code == 2 and not (tmp_path / "fit.json").exists()


def _kill_a_worker_once_it_works():
    def killer():
        while True:
            workers = multiprocessing.active_children()
            if workers:
                time.sleep(0.5)
                os.kill(workers[0].pid, signal.SIGKILL)
                return
            time.sleep(0.02)
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_a_batch_survives_a_killed_worker(peptides, monkeypatch):
    """One of two workers killed mid-run: its chunks are fitted again in a new pool, the
    run says so, and the table is the one an undisturbed run makes."""
    expected = linkmix.fit_groups(peptides, "PeptideSequence", FORMULA, n_jobs=1,
                                  progress=False)
    fit_chunk = batch._GroupFitter.fit_chunk

    def slow(self, *args):  # 24 chunks of 0.1 s or more: the run outlasts the killer's wait
        time.sleep(0.1)
        return fit_chunk(self, *args)

    monkeypatch.setattr(batch._GroupFitter, "fit_chunk", slow)  # workers are forked
    killer = _kill_a_worker_once_it_works()
    with pytest.warns(linkmix.errors.WorkerLostWarning, match="a worker process died"):
        table = linkmix.fit_groups(peptides, "PeptideSequence", FORMULA, n_jobs=2,
                                   chunk_size=50, progress=False)
    killer.join(timeout=10)
    assert_every_group_once(table, peptides)
    assert table["error"].isna().all()
    pd.testing.assert_frame_equal(table, expected)


def test_a_chunk_that_kills_its_worker_every_time_is_reported_per_group(peptides,
                                                                        monkeypatch):
    """The fit of one peptide kills its process whenever it runs (in the pool, again in a
    new pool, and alone): its chunk's groups are reported as failed, every other group is
    fitted, and each group is in the output once."""
    victim = sorted(peptides.PeptideSequence.unique())[130]
    fit_chunk = batch._GroupFitter.fit_chunk

    def deadly(self, by, keys, frame, positions):
        if any(key[0] == victim for key in keys):
            os.kill(os.getpid(), signal.SIGKILL)
        return fit_chunk(self, by, keys, frame, positions)

    monkeypatch.setattr(batch._GroupFitter, "fit_chunk", deadly)  # workers are forked
    with pytest.warns(linkmix.errors.WorkerLostWarning):
        table = linkmix.fit_groups(peptides, "PeptideSequence", FORMULA, n_jobs=2,
                                   chunk_size=40, progress=False)
    assert set(table["PeptideSequence"]) == set(peptides["PeptideSequence"])
    failed = table[table["error"].notna()]
    assert victim in set(failed["PeptideSequence"]) and len(failed) == 40
    assert failed["error"].str.contains("died twice").all()
    assert not table.duplicated(["PeptideSequence", "parameter"]).any()


def test_ctrl_c_then_resume_gives_the_whole_table(tmp_path, peptides):
    """Ctrl-C: exit 130, one line saying where the groups fitted so far are, no final
    file; ``--resume`` fits the rest: the table of an uninterrupted run."""
    data = linkmix.datasets.simulate_msstats(1500, seed=4)
    csv = tmp_path / "peptides.csv"
    data.to_csv(csv, index=False)
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "linkmix.cli", "batch", str(csv), "--by",
               "PeptideSequence", "-f", FORMULA, "-o", str(out), "-j", "1", "--no-progress",
               "--chunk-size", "50"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "out.csv.partial"
    # interrupt once the first chunk's rows are written: a fixed wait after the file
    # appears let the whole run (now well under a second) finish first
    while not (partial.exists() and partial.stat().st_size > 1000) and run.poll() is None:
        time.sleep(0.005)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linkmix: interrupted: ") and \
        "--resume" in lines[0]
    assert partial.exists() and not out.exists()
    kept = pd.read_csv(partial)
    assert 0 < kept.PeptideSequence.nunique() < 1500
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: " in resumed.stdout and not partial.exists()
    table = pd.read_csv(out)
    assert_every_group_once(table, data)
    whole = linkmix.fit_groups(data, "PeptideSequence", FORMULA, n_jobs=1, progress=False)
    key = ["PeptideSequence", "parameter"]
    table, whole = (t.sort_values(key).reset_index(drop=True) for t in (table, whole))
    for column in ("estimate", "std_error", "df", "p_value", "p_adjusted"):
        np.testing.assert_allclose(table[column], whole[column], rtol=1e-12, err_msg=column)
