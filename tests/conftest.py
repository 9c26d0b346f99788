"""Test configuration shared by the whole suite.

float64 parity with torch needs 64-bit JAX types, so x64 is enabled at import, before
any test module builds an array.
"""

import os
import pathlib

import pytest

try:
    import jax
except ModuleNotFoundError as error:  # pytest run by a Python where the project was not installed
    raise pytest.UsageError(
        f"{error}. Install the project and its test dependencies into the Python that runs "
        'pytest first, as README says: python -m pip install -e ".[test]"'
    ) from None

jax.config.update("jax_enable_x64", True)

# Only test_*.py files are collected here. The other modules are helpers the tests import
# (they hold no doctests) or scripts: the make_golden_*.py scripts need torch, which a
# fresh install does not have, and sharding_checks.py runs in its own process with 8
# simulated devices (importing it here would give this session 8 devices).
collect_ignore_glob = [
    path.name
    for path in pathlib.Path(__file__).parent.glob("*.py")
    if not path.name.startswith("test_") and path.name != "conftest.py"
]


# .ci/run runs the suite first without torch, as a new user does, then adds torch and
# reruns only what the first run skipped (the live comparisons, the built docs) and the
# slow tests. With GRADXFORM_SKIPPED_LOG set, every skipped test or module is appended to
# that file by node id, one a line.
_SKIPPED_LOG = os.environ.get("GRADXFORM_SKIPPED_LOG")


def _log_skip(report) -> None:
    if _SKIPPED_LOG and report.skipped:
        with open(_SKIPPED_LOG, "a") as log:
            log.write(report.nodeid + "\n")


def pytest_collectreport(report):
    _log_skip(report)


def pytest_runtest_logreport(report):
    if report.when == "setup" or report.when == "call":
        _log_skip(report)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """With GRADXFORM_PARITY_REPORT=1, prints the largest parity errors measured."""
    if not os.environ.get("GRADXFORM_PARITY_REPORT"):
        return
    try:
        import parity_harness
    except ImportError:
        return
    if parity_harness.MAX_ERRORS:
        terminalreporter.write_sep("-", "largest relative errors against torch (norm-wise)")
        terminalreporter.write_line(parity_harness.report())
