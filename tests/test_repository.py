"""The README's commands are the ones CI runs."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
  command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
  assert "pytest" in command
  assert command in (ROOT / "README.md").read_text()
