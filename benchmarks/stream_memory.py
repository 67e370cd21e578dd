"""A large table through `linkmix batch`: wall time and peak memory of the whole process tree.

Simulates ``--peptides`` MSstats-like peptides (``linkmix.datasets.simulate_msstats``,
5% of intensities missing) to a CSV, runs ``linkmix batch --jobs N`` on it with
results streamed to Parquet, and samples the proportional set size (PSS, from
``/proc/<pid>/smaps_rollup``) of the command and all its worker processes every
0.2 s: shared pages are counted once, so the sum is what the run takes from the
machine.  Prints the wall time, the peak summed PSS and the rows written.

Usage: ``python benchmarks/stream_memory.py [--peptides 100000] [--jobs 2]``.
Linux only (``/proc``).  No peer: lme4 has no streaming batch to compare with.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

import linkmix

MODEL = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in pathlib.Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def pss_kb(pid: int) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptides", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        csv, out = pathlib.Path(tmp) / "table.csv", pathlib.Path(tmp) / "fits.parquet"
        table = linkmix.datasets.simulate_msstats(args.peptides, seed=11, missing_rate=0.05)
        table.to_csv(csv, index=False)
        rows, size = len(table), csv.stat().st_size
        del table
        command = [str(pathlib.Path(sys.executable).with_name("linkmix")), "batch", str(csv),
                   "--by", "PeptideSequence", "--formula", MODEL, "--ml", "-o", str(out),
                   "--jobs", str(args.jobs), "--no-progress"]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        peak = 0
        while process.poll() is None:
            peak = max(peak, sum(pss_kb(p) for p in tree(process.pid)))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        stdout, stderr = process.communicate()
        if process.returncode:
            print(stderr)
            return process.returncode
        import pyarrow.parquet as pq
        written = pq.ParquetFile(out).metadata.num_rows
    print(f"{args.peptides} peptides ({rows:,} rows, {size / 1e6:.0f} MB CSV), "
          f"linkmix batch --jobs {args.jobs} to Parquet: {seconds:.0f} s, peak PSS "
          f"{peak / 1024 ** 2:.2f} GB (all processes), {written:,} result rows")
    print(stdout.strip().splitlines()[0] if stdout.strip() else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
