"""Test set-up: JAX on the CPU with 8 fake devices, set before JAX is imported anywhere.

The tests' shapes are tiny, so XLA's compilation dominates their time: its slow optimisation passes
are skipped (about a quarter of the suite's time). `fixtures.subprocess_env` passes the same flags to
the command-line runs that the tests compare with in-process ones.
"""

import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true", "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# `fixtures` (the data writers and tiny configs shared by the tests) is importable under
# --import-mode=importlib, which does not put test folders on sys.path.
sys.path.insert(0, str(pathlib.Path(__file__).parent))
