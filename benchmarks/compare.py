"""Compares kernel benchmark runs of two versions of the code, form by form.

    python -m benchmarks.compare --base BASE_1 [BASE_2 ...] --new NEW_1 [NEW_2 ...] [--out DIR]

Each argument is the --out folder of a `python -m benchmarks.attention` run (its results.json). Run
the two versions alternately (base, new, base, new) on an otherwise idle machine, so that drifts in
the machine's speed fall on both. For every form, length and mode measured by both, the table gives
the median time of each version (the median over its runs of each run's median) with the spread of
those run medians, the ratio new / base, and the compiled memory ratio. Writes results.json and
results.md to --out (atomically) when given.
"""

import argparse
import json
import pathlib
import statistics

from lra.records import markdown_table, write_results

KEY_FIELDS = ("label", "length", "mode")


def load_rows(folders) -> list[dict]:
  """The timed rows of every run, each tagged with its run's index."""
  rows = []
  for index, folder in enumerate(folders):
    path = pathlib.Path(folder) / "results.json"
    if not path.is_file():
      raise FileNotFoundError(f"{path} does not exist: pass --out folders of benchmarks.attention runs")
    rows += [dict(row, run=index) for row in json.loads(path.read_text())["rows"] if "median_s" in row]
  return rows


def summarize(rows) -> dict:
  """key -> (median of the run medians, spread (max - min) of them, memory_bytes)."""
  grouped = {}
  for row in rows:
    grouped.setdefault(tuple(row[f] for f in KEY_FIELDS), []).append(row)
  summary = {}
  for key, group in grouped.items():
    times = [row["median_s"] for row in group]
    summary[key] = dict(median_s=statistics.median(times), spread_s=max(times) - min(times),
                        runs=len(times), memory_bytes=group[0].get("memory_bytes"))
  return summary


def compare(base_rows, new_rows) -> list[dict]:
  base, new = summarize(base_rows), summarize(new_rows)
  out = []
  for key in [k for k in new if k in base]:
    b, n = base[key], new[key]
    memory = (n["memory_bytes"] / b["memory_bytes"]
              if n["memory_bytes"] and b["memory_bytes"] else None)
    out.append(dict(zip(KEY_FIELDS, key), base=b, new=n, time_ratio=n["median_s"] / b["median_s"],
                    memory_ratio=memory))
  return out


def markdown(comparison) -> str:
  header = ["form", "L", "mode", "base ms (spread)", "new ms (spread)", "new / base time",
            "new / base memory"]
  ms = lambda s: f"{s['median_s'] * 1e3:.2f} ({s['spread_s'] * 1e3:.2f})"
  lines = [[c["label"], str(c["length"]), c["mode"], ms(c["base"]), ms(c["new"]),
            f"{c['time_ratio']:.2f}", "-" if c["memory_ratio"] is None else f"{c['memory_ratio']:.2f}"]
           for c in comparison]
  return "\n".join(["# Kernel benchmark: new against base", "", *markdown_table(header, lines)]) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--base", nargs="+", required=True, help="benchmark folders of the base code")
  parser.add_argument("--new", nargs="+", required=True, help="benchmark folders of the new code")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  comparison = compare(load_rows(args.base), load_rows(args.new))
  text = markdown(comparison)
  if args.out:  # also prints it
    write_results(args.out, dict(base=args.base, new=args.new, rows=comparison), text)
  else:
    print(text)


if __name__ == "__main__":
  main()
