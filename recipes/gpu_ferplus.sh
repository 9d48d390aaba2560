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
source "$(dirname "$0")/gpu_common.sh"

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

train_members 210

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
    TEACHER=$OUT/emoxnet
    STUDENT_TIME=$(budget 25)
    say "students: $SE epochs; at most ${STUDENT_TIME}s"
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
