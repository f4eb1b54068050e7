#!/usr/bin/env bash
# Before using a lent GPU machine (the device tool, which sends the working tree but not ../shared):
# copy the real datasets into .data/ (ignored by git through .git/info/exclude) so that calls can carry them.
#   bash scripts/device/prepare.sh [taobao beibei ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${MBREC_DATA_ROOT:-../shared/datasets}
mkdir -p .data
grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
for name in "${@:-taobao beibei}"; do
    for n in $name; do
        [ -d "$src/$n" ] || { echo "error: $src/$n: no such dataset folder" >&2; exit 2; }
        rm -rf ".data/$n.tmp" && cp -r "$src/$n" ".data/$n.tmp" && rm -rf ".data/$n" && mv ".data/$n.tmp" ".data/$n"
        echo "copied $src/$n -> .data/$n"
    done
done
du -sh .data
