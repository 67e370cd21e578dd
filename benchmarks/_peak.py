"""Peak resident memory of a command (whole process), for the benchmark scripts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess


def run_with_peak(command, timeout=None, check=False):
    """(CompletedProcess, peak MB or None): ``command`` under /usr/bin/time, whose
    ``%M`` (maximum resident set size) is read off stderr and removed from it.  On
    ``timeout`` the whole process group is killed (the command's own children too)
    and ``subprocess.TimeoutExpired`` raised."""
    tool = shutil.which("time") or "/usr/bin/time"
    process = subprocess.Popen([tool, "-f", "PEAK_KB %M", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    lines = stderr.splitlines()
    peak = next((int(line.split()[1]) / 1024 for line in lines
                 if line.startswith("PEAK_KB")), None)
    out = subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                      "\n".join(line for line in lines
                                                if not line.startswith("PEAK_KB")))
    if check:
        out.check_returncode()
    return out, peak
