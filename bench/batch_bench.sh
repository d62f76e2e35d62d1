#!/usr/bin/env bash
# Batch throughput of cmn-generate's archive mode (issue 7): the chest DICOM set repeated to N studies
# (default 200) through a JSONL manifest (one instance per study, distinct ids, no copies), run twice in
# the same session with the same model and threads:
#   one-at-a-time:  --batch-size 1 --no-read-ahead   (read, decode, model, one study after another)
#   batched:        --batch-size B (default 8) with the read-ahead thread decoding DICOM ahead of the model
# and prints studies/s of each (the summary's rate: the run itself, after model load and listing) and the
# ratio. The goal is batched >= 1.5x one-at-a-time. The machine is shared: compare the ratio, not the rates.
#   bench/batch_bench.sh [BUILD_DIR] [N] [BATCH]
# Model: the parity fixture (4 views, beam 3, max length 60: real report lengths) unless CMN_BENCH_BUNDLE
# names a bundle.
set -euo pipefail
build=${1:-build}
n=${2:-200}
batch=${3:-8}
threads=${CMN_BENCH_THREADS:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${CMN_SHARED_DIR:-$here/../shared}
gen=$build/client/cmn-generate
[[ -x $gen ]] || { echo "batch_bench: no $gen (build cmn_generate first)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

files=("$shared"/data/dicom/chest/*.dcm)
for ((i = 0; i < n; i++)); do
  printf '{"id": "bench-%04d", "path": "%s"}\n' "$i" "${files[i % ${#files[@]}]}"
done >"$work/manifest.jsonl"

if [[ -n ${CMN_BENCH_BUNDLE:-} ]]; then
  model=(--bundle "$CMN_BENCH_BUNDLE")
else
  model=(--r2gencmn "$shared/parity/dev/model.pth" --args "$shared/parity/dev/config.json"
         --annotation "$shared/data/iu_xray/annotation.json")
fi

rate() {  # label, extra flags... -> prints studies/s
  local label=$1; shift
  "$gen" "${model[@]}" --manifest "$work/manifest.jsonl" --output "$work/$label.jsonl" --threads "$threads" \
      --progress never --summary "$work/$label.summary.json" "$@" 2>"$work/$label.err" >/dev/null || {
    echo "batch_bench: $label run failed:" >&2; tail -5 "$work/$label.err" >&2; exit 1; }
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["failed"] == 0, s; print("%.4f" % s["studies_per_s"])' \
      "$work/$label.summary.json"
}

single=$(rate single --batch-size 1 --no-read-ahead)
batched=$(rate batched --batch-size "$batch")
python3 - "$n" "$threads" "$batch" "$single" "$batched" <<'PY'
import json, sys
n, threads, batch, single, batched = sys.argv[1:]
single, batched = float(single), float(batched)
print(json.dumps({"studies": int(n), "threads": int(threads), "batch_size": int(batch),
                  "one_at_a_time_studies_per_s": single, "batched_studies_per_s": batched,
                  "ratio": round(batched / single, 3) if single > 0 else None}))
PY
