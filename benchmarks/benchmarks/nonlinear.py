"""asv benchmarks of nonlinear mixed-model fits: the 14 cases of the nlmer suite.

The cases (tests/data/make_nlmer_suite.R) are built as tests/nlmer_suite.py builds
them; ``setup`` builds the model, ``time_fit`` fits it with defaults.  Ratios against
nlmer in the same run: benchmarks/nlmer_suite.py.
"""

import pathlib
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests"))

from nlmer_suite import CASES, fit_case, model_of  # noqa: E402


class NlmerSuite:
    params = sorted(CASES)
    param_names = ["case"]
    timeout = 300

    def setup(self, case):
        warnings.simplefilter("ignore")
        self.case = CASES[case]
        self.model = model_of(self.case)

    def time_fit(self, case):
        fit_case(self.model, self.case)
