#!/usr/bin/env bash
# The main job on the embedded default: build, then report on phantom studies with the phantom bundle (see
# below; no patient data anywhere). Run scripts/setup.sh once before (it installs the Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

# The embedded default (issue 8): a model trained here, by scripts/build_phantom_bundle.sh on first run (minutes
# on a CPU), on procedural phantom studies with known findings; it reads the study it is shown, so its report
# changes with the images. Two unseen phantom studies are drawn as DICOM and reported on, each printed after
# its ground truth. CMN_DEMO=untrained runs the former main job instead (untrained bundle, cartoon study).
if [ "${CMN_DEMO:-phantom}" = phantom ]; then
  PHANTOM_BUNDLE="$BUILD/bundles/phantom"
  if [ ! -f "$PHANTOM_BUNDLE/SHA256SUMS" ]; then
    BUILD="$BUILD" PHANTOM_BUNDLE="$PHANTOM_BUNDLE" bash scripts/build_phantom_bundle.sh
  fi
  STUDIES="$BUILD/demo-phantom"
  rm -rf "$STUDIES"
  "$BUILD/phantom/cmn-phantom" --out "$STUDIES" --studies 2 --seed 2026 --val-fraction 0 --test-fraction 0 --dicom \
    >/dev/null
  for study in "$STUDIES"/dicom/*/; do
    id=$(basename "$study")
    python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[1])]; e=[x for x in m if x["id"]==sys.argv[2]][0]; print("truth  " + sys.argv[2] + ": " + e["report"])' \
      "$STUDIES/manifest.jsonl" "$id"
    "$BUILD/client/cmn-generate" --bundle "$PHANTOM_BUNDLE" --dicom "$study" --threads "$(nproc)"
  done
  exit 0
fi

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
