#!/usr/bin/env bash
# Full FER+ schedules on one GPU, in one go: five ensemble members of four families (ResNet-18 with default
# and with strong augmentation, VGG13, mini-Xception, ConvNeXt-Pico) trained side by side, the EmoXNet
# built from them (logits averaged, test-time flip: the fusion shipped in emoxnet.ferplus), then five
# EmoXNetLite students distilled from that ensemble side by side: ResNet-10 at width 0.5 (the shipped
# student), ResNet-10 at width 0.75 and mini-Xception at width 3, the shapes that fit the 2 ms latency
# target on 2 CPU cores (results/emoxnetlite.ferplus/notes.md), and ResNet-10 at width 0.5 again with
# the teacher scoring every augmented batch, blended by mixup (--teacher-online --mixup 0.2), and once more
# with the teacher online and the student's test-time flip on in training (--student-arg flip=true: the
# recipe of the shipped emoxnetlite.ferplus).
# Augmentation runs on the GPU (--batch-augment), so 16 CPU cores are enough to keep it busy.
#
#   bash recipes/gpu_ferplus.sh OUT_DIR
#
# Environment (all optional): MEMBER_EPOCHS (default auto: two calibration epochs of CALIBRATE_IMAGES (4096)
# images per member, side by side, set the epochs that fit the time left, 5 to 100), STUDENT_EPOCHS (60:
# about 130 s for two students side by side on one H200),
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

GPU=(--batch-size 128 --warmup-epochs 2 --batch-augment --num-workers 2)
SGD=(--lr 0.1)
ADAMW=(--lr 0.003)  # ConvNeXt-Pico's recipe trains with AdamW (lr 0.002 at batch 64)
MEMBER_RUNS=(resnet18 resnet18_strong vgg13 mini_xception convnext_pico)

# members PREFIX SECONDS EPOCHS ARGS...: the five members side by side
members() {
    local prefix=$1 seconds=$2 epochs=$3
    shift 3
    run "${prefix}resnet18" "$seconds" train --recipe recipes/resnet18.ferplus.json --epochs "$epochs" "${SGD[@]}" \
        "$@" &
    run "${prefix}resnet18_strong" "$seconds" train --recipe recipes/resnet18.ferplus.json --epochs "$epochs" \
        --augment strong "${SGD[@]}" "$@" &
    run "${prefix}vgg13" "$seconds" train --recipe recipes/vgg13.ferplus.json --epochs "$epochs" "${SGD[@]}" "$@" &
    run "${prefix}mini_xception" "$seconds" train --recipe recipes/mini_xception.ferplus.json --epochs "$epochs" \
        "${SGD[@]}" "$@" &
    run "${prefix}convnext_pico" "$seconds" train --recipe recipes/convnext_pico.ferplus.json --epochs "$epochs" \
        "${ADAMW[@]}" "$@" &
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
    ME=$(python3 - "$OUT" "$CAL" "$(budget 210)" "${LIMIT:-0}" "${#MEMBER_RUNS[@]}" <<'EOF'
import json, sys
from pathlib import Path
from emozoo.data import open_dataset
out, cal, budget, limit, runs = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
events = [json.loads(line) for f in out.glob("cal_*.jsonl") for line in f.read_text().splitlines()]
seconds = [e["seconds"] for e in events if e.get("event") == "epoch" and e["epoch"] == 2]
n = int(len(open_dataset("ferplus", "Training")) * 0.95)
n = min(n, limit) if limit else n
print(max(5, min(100, int(0.6 * budget / (max(seconds) * n / cal)))) if len(seconds) == runs else 40)
EOF
)
    rm -rf "$OUT"/cal_*/  # keep only their logs
fi
say "members: $ME epochs each; $(left)s left"
members "" "$(budget 210)" "$ME" "${GPU[@]}" "${LIMIT_ARGS[@]}"

say "ensemble; $(left)s left"
# the finished members, less any that scores 2.5 points or more below the best one on the validation split
# (a weak member pulls an averaging fusion down; ConvNeXt-Pico has never been trained to the end here)
mapfile -t MEMBERS < <(python3 - "$OUT" "${MEMBER_RUNS[@]}" 2> "$OUT/members.log" <<'EOF'
import json, sys
from pathlib import Path
from emozoo._config import ModelConfig
from emozoo.bench import validation_accuracy
out, runs = Path(sys.argv[1]), sys.argv[2:]
scores = {}
for run in runs:
    config = out / run / "config.json"
    if config.is_file():
        scores[run] = validation_accuracy(ModelConfig.from_dict(json.loads(config.read_text())))[1] or 0.0
best = max(scores.values(), default=0.0)
for run, score in scores.items():
    keep = score > best - 0.025
    print(f"{'keep' if keep else 'drop'} {run}: {score:.4f}", file=sys.stderr)
    if keep:
        print(out / run)
EOF
)
say "members kept: $(tr '\n' ' ' < "$OUT/members.log")"
timeout "$(budget 60)" $EMOZOO ensemble "${MEMBERS[@]}" --fusion mean_logit --flip --out "$OUT/emoxnet" \
    --json > "$OUT/emoxnet.jsonl" 2> "$OUT/emoxnet.err"
say "ensemble rc=$?: $(grep -o "\"accuracy\": [0-9.]*" "$OUT/emoxnet.jsonl" | head -n 1)"

if [ -f "$OUT/emoxnet/config.json" ]; then
    STUDENT_TIME=$(budget 25)
    say "students: $SE epochs; at most ${STUDENT_TIME}s"
    student() {  # student NAME ARGS...: one student distilled from the ensemble
        local name=$1
        shift
        run "$name" "$STUDENT_TIME" distill --recipe recipes/emoxnetlite.ferplus.json --teacher "$OUT/emoxnet" \
            --epochs "$SE" "${GPU[@]}" "${SGD[@]}" "${LIMIT_ARGS[@]}" "$@" &
    }
    student emoxnetlite
    student emoxnetlite_w075 --student-arg 'student={"backbone": "resnet10", "args": {"width": 0.75}}'
    student emoxnetlite_mx3 --student-arg 'student={"backbone": "mini_xception", "args": {"width": 3.0}}'
    # consistent teaching with mixup: the teacher scores every augmented, blended batch (on the CPU this
    # fine-tune was the best of all, results/emoxnetlite.ferplus/notes.md)
    student emoxnetlite_online --teacher-online --mixup 0.2
    # the shipped student's recipe: the loss is taken on its logits averaged over the face and its mirror
    # (on the CPU, 4 + 2 epochs of it lifted the student to 85.11 %, results/emoxnetlite.ferplus/notes.md)
    student emoxnetlite_flip --teacher-online --student-arg flip=true
    wait
fi
say "done; $(left)s left"
