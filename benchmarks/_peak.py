"""Peak resident memory of a command (whole process), for the benchmark scripts."""

from __future__ import annotations

import shutil
import subprocess


def run_with_peak(command, timeout=None, **kwargs):
    """(CompletedProcess, peak MB or None): ``command`` under /usr/bin/time, whose
    ``%M`` (maximum resident set size) is read off stderr and removed from it."""
    tool = shutil.which("time") or "/usr/bin/time"
    out = subprocess.run([tool, "-f", "PEAK_KB %M", *command], capture_output=True,
                         text=True, timeout=timeout, **kwargs)
    lines = out.stderr.splitlines()
    peak = next((int(line.split()[1]) / 1024 for line in lines
                 if line.startswith("PEAK_KB")), None)
    out.stderr = "\n".join(line for line in lines if not line.startswith("PEAK_KB"))
    return out, peak
