"""asv benchmarks of batch fits on proteomics tables as they come (missing values,
different features per group), the cases of ``benchmarks/msstats_lme4.py``, which also
times lme4 in the same run.

``time_*`` hold only the timed call; ``peakmem_*`` the peak memory of one.
"""

import gzip
import io
import pathlib
import warnings

import numpy as np
import pandas as pd

import linkmix

DATA = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data"
PEPTIDE_MODEL = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"


def _skyline():
    table = pd.read_csv(io.BytesIO(gzip.decompress(
        (DATA / "msstats_DDASkyline.csv.gz").read_bytes())))
    table["log2Intensity"] = np.log2(table.Intensity.where(table.Intensity > 0))
    table["Condition"] = table.Condition.astype(str)
    return table


class SimulatedPeptides:
    """1,000 MSstats-like peptides, 5% missing, one model per peptide."""

    timeout = 600

    def setup(self):
        warnings.simplefilter("ignore")
        self.table = linkmix.datasets.simulate_msstats(1000, seed=7, missing_rate=0.05)

    def time_one_core(self):
        linkmix.fit_groups(self.table, "PeptideSequence", PEPTIDE_MODEL, REML=False, n_jobs=1)

    def time_all_cores(self):
        linkmix.fit_groups(self.table, "PeptideSequence", PEPTIDE_MODEL, REML=False, n_jobs=-1)


class SkylineTables:
    """MSstats' Skyline example: per peptide and per protein (n ≈ 2,000, p ≈ 150)."""

    timeout = 600

    def setup(self):
        warnings.simplefilter("ignore")
        self.table = _skyline()

    def time_per_peptide(self):
        linkmix.fit_groups(self.table, "PeptideSequence",
                           "log2Intensity ~ Condition + FragmentIon + (1 | BioReplicate)",
                           REML=False, n_jobs=1)

    def time_per_protein(self):
        linkmix.fit_groups(self.table, "ProteinName", PEPTIDE_MODEL, REML=False, n_jobs=1)

    def peakmem_per_protein(self):
        linkmix.fit_groups(self.table, "ProteinName", PEPTIDE_MODEL, REML=False, n_jobs=1)


class StreamedRows:
    """5,000 simulated peptides fitted chunk by chunk and appended to a CSV as they come
    (the in-process path of ``linkmix batch``; the 100,000-peptide run with its process
    tree's memory is ``benchmarks/stream_memory.py``)."""

    timeout = 900

    def setup(self):
        warnings.simplefilter("ignore")
        self.table = linkmix.datasets.simulate_msstats(5000, seed=11, missing_rate=0.05)

    def _stream(self):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for i, part in enumerate(linkmix.iter_fit_groups(
                    self.table, "PeptideSequence", PEPTIDE_MODEL, REML=False, n_jobs=1,
                    chunk_size=500)):
                part.to_csv(f"{tmp}/rows.csv", mode="a" if i else "w", header=not i,
                            index=False)

    def time_stream_to_csv(self):
        self._stream()

    def peakmem_stream_to_csv(self):
        self._stream()
