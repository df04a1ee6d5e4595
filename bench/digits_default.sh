#!/usr/bin/env bash
# The README's main job, timed: `pcl-edge evolve` with no arguments (Split Digits, preset cpu).
# Usage: bash bench/digits_default.sh   (prints the final table and the wall-clock seconds)
set -euo pipefail
work=$(mktemp -d)
cd "$work"
start=$(date +%s.%N)
pcl-edge -q evolve
end=$(date +%s.%N)
python -c "import json,glob; s=json.load(open(glob.glob('runs/*/summary.json')[0])); print('ACC', s['acc'], 'BWT', s['bwt'], 'wall_s(run)', s['wall_s'])"
echo "wall-clock (process, incl. imports): $(python -c "print(round($end - $start, 1))") s"
