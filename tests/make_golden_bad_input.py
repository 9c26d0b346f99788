"""Writes golden/bad_input.json: what torch 2.13 does with each case of bad_input_cases.

Run with torch installed: ``python tests/make_golden_bad_input.py``.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import torch

import bad_input_cases as cases

OUT = pathlib.Path(__file__).parent / "golden" / "bad_input.json"


def main() -> None:
    assert torch.__version__.startswith("2.13"), torch.__version__
    warnings.simplefilter("ignore")
    results = {case_id: cases.run_torch(cls, kwargs) for case_id, cls, kwargs in cases.cases()}
    make_param = lambda: torch.nn.Parameter(torch.ones(2, dtype=torch.float64))  # noqa: E731
    schedulers = {
        case_id: cases.outcome(lambda run=run: run(torch.optim, make_param) or True)
        for case_id, run in cases.scheduler_cases().items()
    }
    OUT.write_text(
        json.dumps({"torch": torch.__version__, "cases": results, "schedulers": schedulers}, indent=1, sort_keys=True)
        + "\n"
    )
    print(f"{len(results)} cases -> {OUT}")


if __name__ == "__main__":
    main()
