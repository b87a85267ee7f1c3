"""Test set-up: JAX on the CPU with 8 fake devices, set before JAX is imported anywhere.

The tests' shapes are tiny, so XLA's compilation dominates their time: its slow optimisation passes
are skipped (about a quarter of the suite's time), the CPU's older fusion emitters, which compile
faster unoptimised, replace the new ones (a third of what is left), and a compilation cache for the
session compiles each program once (below). `fixtures.subprocess_env` passes the same flags and
cache to the command-line runs that the tests compare with in-process ones.
"""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true", "--xla_cpu_use_fusion_emitters=false",
    "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# `fixtures` (the data writers and tiny configs shared by the tests) is importable under
# --import-mode=importlib, which does not put test folders on sys.path.
sys.path.insert(0, str(pathlib.Path(__file__).parent))


# Many tests (and the command-line runs they start) compile the same programs: the same tiny models
# and train steps. One compilation cache per session, shared by the xdist workers and passed to the
# subprocesses through the environment, compiles each program once (JAX's persistent cache keys a
# program by its HLO, the backend and the flags); it is removed when the session ends.
CACHE_KEY = "rfa_jax_xla_cache"
CACHE_STASH = pytest.StashKey[str]()


def pytest_configure(config):
  if hasattr(config, "workerinput"):  # an xdist worker: the controller made the cache
    folder = config.workerinput[CACHE_KEY]
  else:
    folder = tempfile.mkdtemp(prefix="rfa_jax_tests_xla_cache_")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
  config.stash[CACHE_STASH] = folder
  os.environ.update(JAX_COMPILATION_CACHE_DIR=folder, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # tiny programs too


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):  # xdist, in the controller: hand each worker the session's cache
  node.workerinput[CACHE_KEY] = node.config.stash[CACHE_STASH]
