#!/usr/bin/env bash
# Builds the phantom model bundle that scripts/demo.sh uses (issue 8), from nothing but this repository:
#   1. cmn-phantom draws $PHANTOM_STUDIES 4-view phantom studies with known findings and their reports;
#   2. cmn-train trains configs/phantom.yaml on them (cached patch_stats features; minutes on a CPU);
#   3. the best epoch is scored on the held-out test split, and again with the test images shuffled across
#      studies: a model that reads the pixels must fall to chance there (scores in $OUT/*_scores.json).
# Everything goes under $BUILD (git-ignored); no weights are committed. Re-running skips finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=${PHANTOM_DIR:-$BUILD/phantom-bench}
STUDIES=${PHANTOM_STUDIES:-3000}
BUNDLE=${PHANTOM_BUNDLE:-$BUILD/bundles/phantom}
DATA="$OUT/data"
RUN="$OUT/run"
TRAIN="$BUILD/train/trainer/cmn-train"
common=(data.annotation="$DATA/annotation.json" data.image_dir="$DATA/images" trainer.progress=false)
# Scores below are over the whole test split (training selects on its first trainer.eval_max_examples val studies).
score=(trainer.eval_max_examples=0)

if [ ! -f "$DATA/manifest.jsonl" ] || [ "$(wc -l < "$DATA/manifest.jsonl")" != "$STUDIES" ]; then
  rm -rf "$DATA"
  "$BUILD/phantom/cmn-phantom" --out "$DATA" --studies "$STUDIES" --seed 1
fi

if [ ! -f "$BUNDLE/SHA256SUMS" ]; then
  # bash's own `time` (GNU time is not installed by default): wall and CPU seconds of the training run.
  TIMEFORMAT="cmn-train: %R s wall, %U s user, %S s system"
  time "$TRAIN" configs/phantom.yaml "${common[@]}" trainer.save_dir="$RUN" trainer.bundle_dir="$BUNDLE"
fi

# Held-out test split, with the selected weights (model_best.pth: the bundle's).
"$TRAIN" configs/phantom.yaml "${common[@]}" "${score[@]}" trainer.run_type=test trainer.init_checkpoint="$RUN/model_best.pth" \
  trainer.save_dir="$OUT/test" trainer.bundle_dir=none | tail -n 1 > "$OUT/test_scores.json"

# Control: the same model, each test study shown the images of another study (a seeded permutation that moves
# every study). Reports stay with their study, so only a model that ignores the pixels could keep its score.
python3 - "$DATA/annotation.json" "$OUT/shuffled_annotation.json" <<'PY'
import json, random, sys
ann = json.load(open(sys.argv[1]))
test = ann["test"]
perm = list(range(len(test)))
rng = random.Random(8)
while any(i == p for i, p in enumerate(perm)):
    rng.shuffle(perm)
paths = [e["image_path"] for e in test]
for e, p in zip(test, perm):
    e["image_path"] = paths[p]
json.dump(ann, open(sys.argv[2], "w"))
PY
"$TRAIN" configs/phantom.yaml "${common[@]}" "${score[@]}" data.annotation="$OUT/shuffled_annotation.json" trainer.run_type=test \
  trainer.init_checkpoint="$RUN/model_best.pth" trainer.save_dir="$OUT/shuffled" trainer.bundle_dir=none \
  | tail -n 1 > "$OUT/shuffled_scores.json"

python3 - "$OUT/test_scores.json" "$OUT/shuffled_scores.json" <<'PY'
import json, sys
t, s = (json.load(open(p)) for p in sys.argv[1:3])
# CE_phantom_*: the phantom's six findings; CE_F1_MACRO: CheXpert's 14 observations (U-zeros).
print("held-out test : CE macro-F1 %.3f  micro-F1 %.3f  CheXpert-14 macro-F1 %.3f  BLEU-4 %.3f  (%d studies)" % (t["CE_phantom_macro_F1"], t["CE_phantom_micro_F1"], t["CE_F1_MACRO"], t["BLEU_4"], t["examples"]))
print("images shuffled: CE macro-F1 %.3f  micro-F1 %.3f  CheXpert-14 macro-F1 %.3f  BLEU-4 %.3f" % (s["CE_phantom_macro_F1"], s["CE_phantom_micro_F1"], s["CE_F1_MACRO"], s["BLEU_4"]))
PY
echo "bundle: $BUNDLE"
