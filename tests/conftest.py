"""Shared fixtures: lme4's reference fits and the datasets they were made from."""

import json
import pathlib

import pandas as pd
import pytest

import linkmix.datasets

DATA = pathlib.Path(__file__).parent / "data"
LME4_LMM = json.loads((DATA / "lme4_lmm.json").read_text())


def load_dataset(name: str) -> pd.DataFrame:
    """A shipped dataset with R's factor level order where it differs from sorting."""
    frame = linkmix.datasets.load(name)
    if name == "Orthodont":  # R orders Sex as Male, Female
        frame["Sex"] = pd.Categorical(frame["Sex"], ["Male", "Female"])
    return frame


@pytest.fixture(scope="session")
def sleepstudy():
    return load_dataset("sleepstudy")
