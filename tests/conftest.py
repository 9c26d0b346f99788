"""Test configuration shared by the whole suite.

float64 parity with torch needs 64-bit JAX types, so x64 is enabled at import, before
any test module builds an array.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

# Runs in its own process with 8 simulated devices (tests/test_sharding.py starts it):
# importing it here, for --doctest-modules, would give this session 8 devices.
collect_ignore = ["sharding_checks.py"]


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
