"""Files in and out: CSV/TSV/Parquet → DataFrame keeping quoted codes as text, and
output that appears only whole.

R's ``write.csv`` quotes factors and character columns; a quoted column of
digits (a subject id, a treatment code) is a factor, not a number.  ``read_table``
keeps such columns as strings so that they enter formulas as categories.

``atomic_output`` is how every file linkmix writes comes about: under a temporary name
beside it, moved into place only when complete, so a refused or failed command leaves
no file (or the one that was there before) behind.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import tempfile

import pandas as pd

from .errors import DataError

__all__ = ["read_table", "atomic_output"]


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path in ``path``'s folder; when the block ends without an
    exception, move it to ``path`` (``os.replace``: atomic on one file system), else
    remove it."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    # the extension kept last: writers that read the format off the name (matplotlib)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.",
                                         suffix=os.path.splitext(name)[1] or ".tmp", dir=folder)
    os.close(handle)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)   # mkstemp's 0600 is not a file's usual mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _quoted_columns(path: str, sep: str, sample_lines: int = 200) -> list[str]:
    """Names of columns whose sampled non-empty fields are all double-quoted."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        header = next(csv.reader([fh.readline()], delimiter=sep), [])
        quoted = [True] * len(header)
        seen = [False] * len(header)
        for _, line in zip(range(sample_lines), fh):
            fields = next(csv.reader([line], delimiter=sep, quoting=csv.QUOTE_NONE), [])
            for i, field in enumerate(fields[: len(header)]):
                field = field.strip()
                if field and field != "NA":
                    seen[i] = True
                    quoted[i] &= field.startswith('"') and field.endswith('"')
    return [name for name, q, s in zip(header, quoted, seen) if q and s]


def read_table(path, *, factors=(), columns=None) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file (CSV and TSV may be gzipped: ``.csv.gz``) into a
    DataFrame.

    Quoted columns of a CSV/TSV and the columns named in ``factors`` are read
    as strings (categories in formulas); ``NA`` and empty fields are missing.  With
    ``columns``, only those (and ``factors``) are read where the file has them: a large
    table's other columns cost memory and parsing time (a name the file lacks is left
    for the caller to report, as it would be without ``columns``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file {path!r} does not exist")
    if os.path.isdir(path):
        raise DataError(f"data file {path!r} is a folder")
    if os.path.getsize(path) == 0:
        raise DataError(f"data file {path!r} is empty")
    lower = path.lower()
    keep = None if columns is None else set(columns) | set(factors)
    try:
        if lower.endswith((".parquet", ".pq")):
            if keep is not None:
                import pyarrow.parquet
                keep = [c for c in pyarrow.parquet.read_schema(path).names if c in keep]
            frame = pd.read_parquet(path, columns=keep)
        else:
            sep = "\t" if lower.removesuffix(".gz").endswith((".tsv", ".tab")) else ","
            text_cols = set(_quoted_columns(path, sep)) | set(factors)
            frame = pd.read_csv(path, sep=sep, dtype={c: str for c in text_cols},
                                na_values=["NA", ""], keep_default_na=False,
                                usecols=None if keep is None else (lambda c: c in keep))
    except ImportError as exc:
        raise DataError(f"reading {path!r} needs a Parquet engine (pip install pyarrow): "
                        f"{exc}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError, OSError) as exc:
        raise DataError(f"cannot read {path!r} as a table: {exc}") from None
    unknown = [c for c in factors if c not in frame.columns]
    if unknown:
        raise DataError(f"--factor/factors names unknown column(s) {unknown}; the data has "
                        f"columns {list(map(str, frame.columns))}")
    for col in factors:
        frame[col] = frame[col].where(frame[col].isna(), frame[col].astype(str))
    return frame
