#!/usr/bin/env bash
# The main job on the embedded default: build, make the demo bundle and a synthetic 4-view study (no patient
# data), and generate a report for it in process. The demo bundle is UNTRAINED (random weights, seeded):
# every output says so. Run scripts/setup.sh once before (it installs the Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

BUNDLE="$BUILD/bundles/untrained-demo"
STUDY="$BUILD/demo-study"
if [ ! -f "$BUNDLE/SHA256SUMS" ]; then
  "$BUILD/client/cmn-bundle" init-untrained --out "$BUNDLE" --vocab configs/default_vocab.txt --views 4 --seed 1 \
    --name untrained-demo
fi
"$BUILD/client/cmn-synth-study" --out "$STUDY" --views 4 --seed 1
"$BUILD/client/cmn-generate" --bundle "$BUNDLE" \
  --images "$STUDY/view0.png" "$STUDY/view1.png" "$STUDY/view2.png" "$STUDY/view3.png" \
  --max-length 40 --threads "$(nproc)"
