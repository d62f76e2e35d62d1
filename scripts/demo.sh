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
# changes with the images. The main job serves it: cmn-server on loopback, and cmn-client sends two unseen
# phantom studies (DICOM, drawn here, no patient data) over gRPC as a PACS integration would; each report is
# printed after its ground truth. CMN_DEMO=untrained runs the former job instead (untrained bundle, in process).
if [ "${CMN_DEMO:-phantom}" = phantom ]; then
  PHANTOM_BUNDLE="$BUILD/bundles/phantom"
  if [ ! -f "$PHANTOM_BUNDLE/SHA256SUMS" ]; then
    BUILD="$BUILD" PHANTOM_BUNDLE="$PHANTOM_BUNDLE" bash scripts/build_phantom_bundle.sh
  fi
  STUDIES="$BUILD/demo-phantom"
  rm -rf "$STUDIES"
  "$BUILD/phantom/cmn-phantom" --out "$STUDIES" --studies 2 --seed 2026 --val-fraction 0 --test-fraction 0 --dicom \
    >/dev/null

  # Serve: any free port on 127.0.0.1 (the start line names it), no metrics port; stopped with SIGTERM below,
  # which drains in-flight calls and exits 0.
  LOG="$BUILD/demo-server.log"
  "$BUILD/server/cmn-server" --config configs/server.yaml model.bundle="$PHANTOM_BUNDLE" server.host=127.0.0.1 \
    server.port=0 metrics.port=-1 model.threads="$(nproc)" > "$LOG.out" 2> "$LOG" &
  SERVER_PID=$!
  trap 'kill -TERM "$SERVER_PID" 2>/dev/null || true' EXIT
  PORT=""
  for _ in $(seq 1 300); do
    PORT=$(sed -n 's/^cmn-server listening port=\([0-9]*\).*/\1/p' "$LOG.out" 2>/dev/null || true)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "demo: cmn-server did not start:" >&2; cat "$LOG" >&2; exit 1; }
    sleep 0.2
  done
  [ -n "$PORT" ] || { echo "demo: cmn-server did not report its port within 60 s (log: $LOG)" >&2; exit 1; }
  "$BUILD/client/cmn-client" --server "127.0.0.1:$PORT" --health --service cmn.v1.ReportService >/dev/null
  echo "cmn-server on 127.0.0.1:$PORT serving $(basename "$PHANTOM_BUNDLE") (log: $LOG)"
  for study in "$STUDIES"/dicom/*/; do
    id=$(basename "$study")
    python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[1])]; e=[x for x in m if x["id"]==sys.argv[2]][0]; print("truth  " + sys.argv[2] + ": " + e["report"])' \
      "$STUDIES/manifest.jsonl" "$id"
    printf 'report %s: ' "$id"
    "$BUILD/client/cmn-client" --server "127.0.0.1:$PORT" --require-trained "$study"
  done
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
  trap - EXIT
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
