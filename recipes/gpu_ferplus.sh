#!/usr/bin/env bash
# Full FER+ schedules on one GPU, in one go: four ensemble members (ResNet-18 with default and with strong
# augmentation, VGG13, mini-Xception) trained side by side, the EmoXNet
# built from them (learned_weights fitted on the 5 % holdout, test-time flip), then EmoXNetLite
# distilled from that ensemble (default and strong augmentation side by side). Augmentation runs on the GPU
# (--batch-augment), so 16 CPU cores are enough to keep it busy.
#
#   bash recipes/gpu_ferplus.sh OUT_DIR
#
# Environment (all optional): MEMBER_EPOCHS (default auto: two calibration epochs of CALIBRATE_IMAGES (4096)
# images per member, side by side, sets the epochs that fit the time left, 5 to 100), STUDENT_EPOCHS (60:
# about 130 s for the two students side by side on one H200),
# DEADLINE (seconds for the whole script, 560; a stage still running near it is stopped and its last
# epoch's checkpoint is kept),
# LIMIT (train on at most N images: smoke runs), EMOZOO_FERPLUS_NPZ (the data file), EMOZOO (how to
# call the CLI, default "python3 -m emozoo.cli").
# Writes OUT_DIR/<run>/ model folders (config.json, model.safetensors, train_log.jsonl) and logs.
set -u
OUT=${1:?usage: gpu_ferplus.sh OUT_DIR}
ME=${MEMBER_EPOCHS:-auto}
SE=${STUDENT_EPOCHS:-60}
DEADLINE=${DEADLINE:-560}
EMOZOO=${EMOZOO:-python3 -m emozoo.cli}
LIMIT_ARGS=()
[ -n "${LIMIT:-}" ] && LIMIT_ARGS=(--limit "$LIMIT")
START=$(date +%s)
mkdir -p "$OUT"
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
# budget N: the seconds left before the deadline less N, at least 1
budget() { local s=$(( $(left) - $1 )); echo $(( s > 1 ? s : 1 )); }
say() { echo "[$(( $(date +%s) - START ))s] $*"; }

# run NAME SECONDS ARGS...: one emozoo command with its --json log and stderr kept under OUT/
run() {
    local name=$1 seconds=$2
    shift 2
    say "start $name (at most ${seconds}s): $*"
    OMP_NUM_THREADS=2 timeout "$seconds" $EMOZOO "$@" --out "$OUT/$name" --json \
        > "$OUT/$name.jsonl" 2> "$OUT/$name.err"
    local rc=$?
    say "end $name rc=$rc: $(tail -n 1 "$OUT/$name.jsonl" 2>/dev/null)"
    [ -f "$OUT/$name/config.json" ] || finalize "$OUT/$name"
}

# finalize RUN_DIR: a run stopped by the deadline keeps its last epoch as a model folder
finalize() {
    python3 - "$1" <<'EOF'
import json, sys
from pathlib import Path
import emozoo
from emozoo.data import FERPLUS_LABELS
from emozoo._checkpoint import CKPT_META, CKPT_TENSORS
from safetensors.torch import load_file
run = Path(sys.argv[1]); ckpt = run / "checkpoint"
if not (ckpt / CKPT_META).is_file():
    sys.exit(print(f"{run}: no checkpoint, nothing kept"))
meta = json.loads((ckpt / CKPT_META).read_text())
model = emozoo.create(meta["architecture"], label_names=FERPLUS_LABELS, **meta["model_args"])
model.load_state_dict({k[6:]: v for k, v in load_file(str(ckpt / CKPT_TENSORS)).items() if k.startswith("model.")})
recipe = {**meta["recipe"], "stopped_after_epoch": meta["epoch"], "steps": meta["step"]}
emozoo.save_pretrained(model, run, dataset="ferplus (Training)", recipe=recipe,
                       metrics={"PublicTest": meta["history"][-1]["val"]})
print(f"{run}: kept epoch {meta['epoch']} of {meta['recipe']['epochs']}")
EOF
}

GPU=(--batch-size 128 --lr 0.1 --warmup-epochs 2 --batch-augment --num-workers 3)

# members PREFIX SECONDS EPOCHS ARGS...: the four members side by side
members() {
    local prefix=$1 seconds=$2 epochs=$3
    shift 3
    run "${prefix}resnet18" "$seconds" train --recipe recipes/resnet18.ferplus.json --epochs "$epochs" "$@" &
    run "${prefix}resnet18_strong" "$seconds" train --recipe recipes/resnet18.ferplus.json --epochs "$epochs" \
        --augment strong "$@" &
    run "${prefix}vgg13" "$seconds" train --recipe recipes/vgg13.ferplus.json --epochs "$epochs" "$@" &
    run "${prefix}mini_xception" "$seconds" train --recipe recipes/mini_xception.ferplus.json --epochs "$epochs" "$@" &
    wait
}

if [ "$ME" = auto ]; then
    # two epochs of CALIBRATE_IMAGES images per member, side by side as in the real run: the second (past
    # the warm-up) of the slowest member sets the epochs that fit the time left (60 % of it is planned;
    # the rest covers the per-epoch validation the calibration leaves out: on an H200 a full epoch with its
    # validation took 3.4 s where the calibration predicted 2.6 s, and at 80 % the deadline stopped every
    # member 11-22 epochs before the end of its cosine schedule)
    CAL=${CALIBRATE_IMAGES:-4096}
    [ -n "${LIMIT:-}" ] && [ "$LIMIT" -lt "$CAL" ] && CAL=$LIMIT
    members cal_ 150 2 "${GPU[@]}" --limit "$CAL" --val-split none
    ME=$(python3 - "$OUT" "$CAL" "$(budget 210)" "${LIMIT:-0}" <<'EOF'
import json, sys
from pathlib import Path
from emozoo.data import open_dataset
out, cal, budget, limit = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
events = [json.loads(line) for f in out.glob("cal_*.jsonl") for line in f.read_text().splitlines()]
seconds = [e["seconds"] for e in events if e.get("event") == "epoch" and e["epoch"] == 2]
n = int(len(open_dataset("ferplus", "Training")) * 0.95)
n = min(n, limit) if limit else n
print(max(5, min(100, int(0.6 * budget / (max(seconds) * n / cal)))) if len(seconds) == 4 else 40)
EOF
)
    rm -rf "$OUT"/cal_*/  # keep only their logs
fi
say "members: $ME epochs each; $(left)s left"
members "" "$(budget 210)" "$ME" "${GPU[@]}" "${LIMIT_ARGS[@]}"

say "ensemble; $(left)s left"
MEMBERS=()
for m in resnet18 resnet18_strong vgg13 mini_xception; do
    [ -f "$OUT/$m/config.json" ] && MEMBERS+=("$OUT/$m")
done
timeout "$(budget 60)" $EMOZOO ensemble "${MEMBERS[@]}" --fusion learned_weights --flip --out "$OUT/emoxnet" \
    --json > "$OUT/emoxnet.jsonl" 2> "$OUT/emoxnet.err"
say "ensemble rc=$?: $(grep -o "\"accuracy\": [0-9.]*" "$OUT/emoxnet.jsonl" | head -n 1)"

if [ -f "$OUT/emoxnet/config.json" ]; then
    STUDENT_TIME=$(budget 25)
    say "students: $SE epochs; at most ${STUDENT_TIME}s"
    run emoxnetlite $STUDENT_TIME distill --recipe recipes/emoxnetlite.ferplus.json --teacher "$OUT/emoxnet" \
        --epochs "$SE" "${GPU[@]}" "${LIMIT_ARGS[@]}" &
    run emoxnetlite_strong $STUDENT_TIME distill --recipe recipes/emoxnetlite.ferplus.json --teacher "$OUT/emoxnet" \
        --epochs "$SE" --augment strong "${GPU[@]}" "${LIMIT_ARGS[@]}" &
    wait
fi
say "done; $(left)s left"
