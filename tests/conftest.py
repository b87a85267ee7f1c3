"""Test set-up: JAX on the CPU with 8 fake devices, set before JAX is imported anywhere.

The tests' shapes are tiny, so XLA's compilation dominates their time: its slow optimisation passes
are skipped (about a quarter of the suite's time). `fixtures.subprocess_env` passes the same flags to
the command-line runs that the tests compare with in-process ones.
"""

import os

os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true", "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
