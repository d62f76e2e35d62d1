#!/usr/bin/env bash
# Issue 14's proofs on the phantom benchmark, in one run: configs/phantom.yaml trained twice on the same phantom
# studies with the same seed and epochs, with the alignment head (the recipe as shipped) and without it
# (model.align_queries=0, align.* off), side by side (one torch thread each); then
#   - held-out test CE macro-F1 of both (cmn-train run_type=test on each model_best.pth): the alignment losses
#     may not cost more than 0.01
#   - training wall and CPU time of both: alignment may not cost more than 2x
#   - cmn-align-proof on the aligned bundle: ITM ROC AUC own vs another study's report (>= 0.95) and vs a report
#     one finding apart (>= 0.85), consistency vs wrong drafts (>= 0.75), retrieval top-1 same findings (>= 80%)
# Everything under $OUT (default build/align-ablation); re-running reuses the data and finished runs.
#   bench/align_ablation.sh [BUILD_DIR] [STUDIES]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
STUDIES=${2:-3000}
OUT=${OUT:-$BUILD/align-ablation}
DATA=$OUT/data
TRAIN=$BUILD/train/trainer/cmn-train
for bin in "$BUILD/phantom/cmn-phantom" "$TRAIN" "$BUILD/bench/cmn-align-proof"; do
  [[ -x $bin ]] || { echo "align_ablation: no $bin (build it first)" >&2; exit 2; }
done
mkdir -p "$OUT"
if [ ! -f "$DATA/manifest.jsonl" ] || [ "$(wc -l < "$DATA/manifest.jsonl")" != "$STUDIES" ]; then
  rm -rf "$DATA"
  "$BUILD/phantom/cmn-phantom" --out "$DATA" --studies "$STUDIES" --seed 1
fi
common=(data.annotation="$DATA/annotation.json" data.image_dir="$DATA/images" trainer.progress=false)
off=(model.align_queries=0 align.itc_weight=0 align.itm_weight=0 align.retrieval_index=false)

train() {  # name, overrides...
  local name=$1; shift
  [ -f "$OUT/$name/bundle/SHA256SUMS" ] && return 0
  # bash's `time` on the run alone (GNU time is not installed by default)
  { TIMEFORMAT="$name: %R s wall, %U s user, %S s system"; time "$TRAIN" configs/phantom.yaml "${common[@]}" "$@" \
      trainer.save_dir="$OUT/$name/run" trainer.bundle_dir="$OUT/$name/bundle" > "$OUT/$name.log" 2>&1; } 2> "$OUT/$name.time"
}
train aligned &
train plain "${off[@]}" &
wait
cat "$OUT/aligned.time" "$OUT/plain.time"

for name in aligned plain; do
  extra=()
  [ "$name" = plain ] && extra=("${off[@]}")
  "$TRAIN" configs/phantom.yaml "${common[@]}" "${extra[@]}" trainer.eval_max_examples=0 trainer.run_type=test \
    trainer.init_checkpoint="$OUT/$name/run/model_best.pth" trainer.save_dir="$OUT/$name/test" trainer.bundle_dir=none \
    | tail -n 1 > "$OUT/${name}_test.json"
done
"$BUILD/bench/cmn-align-proof" --bundle "$OUT/aligned/bundle" --annotation "$DATA/annotation.json" \
  --manifest "$DATA/manifest.jsonl" > "$OUT/proof.json"

python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
t = {n: json.load(open(f"{out}/{n}_test.json")) for n in ("aligned", "plain")}
def secs(n):
    m = re.search(r"([\d.]+) s wall, ([\d.]+) s user, ([\d.]+) s system", open(f"{out}/{n}.time").read())
    return float(m.group(1)), float(m.group(2)) + float(m.group(3))
wa, ca = secs("aligned"); wp, cp = secs("plain")
print("held-out test CE macro-F1 (phantom six): aligned %.3f  plain %.3f  difference %+.3f" %
      (t["aligned"]["CE_phantom_macro_F1"], t["plain"]["CE_phantom_macro_F1"],
       t["aligned"]["CE_phantom_macro_F1"] - t["plain"]["CE_phantom_macro_F1"]))
print("training: aligned %.0f s wall / %.0f s CPU, plain %.0f s wall / %.0f s CPU: %.2fx CPU" % (wa, ca, wp, cp, ca / cp))
p = json.load(open(f"{out}/proof.json"))
print(json.dumps(p, indent=1))
PY
