#!/usr/bin/env bash
# Before/after: this checkout's overhead benchmark run on two checkouts' code, alternating,
# in one session; then, per checkout, the medians over every repeat of the per-repeat ratios.
#   git worktree add /tmp/before <rev>
#   bash benchmarks/compare_trees.sh /tmp/before . [rounds] [overhead.py arguments...]
# (default arguments: --repeats 3 --epochs 5)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); rounds=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
arguments=("$@"); [ ${#arguments[@]} -gt 0 ] || arguments=(--repeats 3 --epochs 5)
log=$(mktemp)
for round in $(seq "$rounds"); do
    for tree in "$before" "$after"; do
        echo "== $tree, round $round" | tee -a "$log"
        # The benchmark file is this checkout's; the code it measures is the tree's.
        PYTHONPATH="$tree" TF_CPP_MIN_LOG_LEVEL=3 "$here/.venv/bin/python" \
            "$here/benchmarks/overhead.py" "${arguments[@]}" 2>&1 | grep "^repeat" | tee -a "$log"
    done
done
"$here/.venv/bin/python" - "$log" <<'POOL'
import re, statistics, sys
runs, tree = {}, None
for line in open(sys.argv[1]):
    if line.startswith("== "):
        tree = line[3:].split(",")[0]
    elif line.startswith("repeat "):
        pairs = re.findall(r"(\w+) (\d+)", line.split(":", 1)[1])
        runs.setdefault(tree, []).append({k: float(v) for k, v in pairs})
for tree, repeats in runs.items():
    print(f"{tree}: medians over {len(repeats)} repeats of the per-repeat ratios")
    for name in repeats[0]:
        line = f"  {name:24s} {statistics.median(r[name] for r in repeats):6.0f} steps/s"
        for base in ("plain_fit", "bare_loop"):
            if base in repeats[0]:
                ratio = statistics.median(r[name] / r[base] for r in repeats)
                line += f"  x {base} {ratio:.3f}"
        print(line)
POOL
