#!/usr/bin/env bash
# Before/after: the same overhead benchmark on two checkouts, alternating, in one session.
#   git worktree add /tmp/before <rev>
#   bash benchmarks/compare_trees.sh /tmp/before . [rounds] [overhead.py arguments...]
# (default arguments: --repeats 3 --epochs 6)
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); rounds=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
arguments=("$@"); [ ${#arguments[@]} -gt 0 ] || arguments=(--repeats 3 --epochs 6)
python=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
for round in $(seq "$rounds"); do
    for tree in "$before" "$after"; do
        echo "== $tree, round $round"
        (cd "$tree" && PYTHONPATH="$tree" TF_CPP_MIN_LOG_LEVEL=3 "$python" \
            benchmarks/overhead.py "${arguments[@]}" 2>&1 | grep -A6 "steps/sec, median")
    done
done
