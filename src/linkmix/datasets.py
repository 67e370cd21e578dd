"""Small public datasets shipped with linkmix (exports of R's lme4 and nlme data).

``load(name)`` returns a DataFrame with R's factor columns as strings, read by
``linkmix.read_table``; ``path(name)`` gives the CSV file itself.
"""

from __future__ import annotations

from importlib import resources

from .io import read_table

__all__ = ["load", "path", "names"]

_FILES = {"sleepstudy": "sleepstudy.csv", "Dyestuff": "Dyestuff.csv",
          "Dyestuff2": "Dyestuff2.csv", "Penicillin": "Penicillin.csv",
          "Orthodont": "Orthodont.csv"}


def names() -> list[str]:
    """Names of the shipped datasets."""
    return sorted(_FILES)


def path(name: str) -> str:
    """Filesystem path of dataset ``name``'s CSV file."""
    if name not in _FILES:
        raise KeyError(f"unknown dataset {name!r}; available: {names()}")
    return str(resources.files("linkmix") / "data" / _FILES[name])


def load(name: str):
    """Dataset ``name`` as a pandas DataFrame."""
    return read_table(path(name))
