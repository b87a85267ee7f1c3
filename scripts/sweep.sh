#!/usr/bin/env bash
# A grid of training runs, then its report (report.md, report.csv, runs.csv, PNG plots) in its root.
# Usage: scripts/sweep.sh --tasks=listops --attentions=all [--preset=small] [--seeds=0,1,2]
#        [--root=runs] [-- --config.key=value ...]   (see `python -m lra.sweep --help`)
# Exits with the sweep's status: non-zero if a run failed (the report is written all the same).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
root=runs
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --) break ;;
    --root=*) root="${args[i]#--root=}" ;;
    --root) root="${args[i + 1]:-}" ;;
  esac
done
"$PYTHON" -m lra.sweep "$@"
status=$?
if [[ -d "$root" ]]; then
  "$PYTHON" -m lra.report "$root" || exit $?
fi
exit "$status"
