# Shared by the recipes/gpu_*.sh scripts (sourced, not run): the deadline, one-command runs with their logs,
# and the epoch count that fits the time left. The caller sets OUT and may set DEADLINE, EMOZOO, LIMIT.
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

GPU=(--batch-size 128 --warmup-epochs 2 --batch-augment --num-workers 2)
SGD=(--lr 0.1)
ADAMW=(--lr 0.003)  # the AdamW recipes (ConvNeXt-Pico, the timm hybrids) train at lr 0.002 at batch 64

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
    python3 - "$1" <<'PY'
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
                       metrics={"holdout": meta["history"][-1]["val"]})
print(f"{run}: kept epoch {meta['epoch']} of {meta['recipe']['epochs']}")
PY
}

# fit_epochs CAL_IMAGES SECONDS RUNS: the epochs each of RUNS members (side by side) can train in SECONDS, from
# the second calibration epoch (past the warm-up) of the slowest, OUT/cal_*.jsonl; 60 % of the time is planned,
# the rest covers the per-epoch validation the calibration leaves out (on an H200 a full epoch with its
# validation took 3.4 s where the calibration predicted 2.6 s, and at 80 % the deadline stopped every member
# 11-22 epochs before the end of its cosine schedule); 5 to 100, 40 when a calibration run failed
fit_epochs() {
    python3 - "$OUT" "$1" "$2" "${LIMIT:-0}" "$3" <<'PY'
import json, sys
from pathlib import Path
from emozoo.data import open_dataset
out, cal, budget, limit, runs = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
events = [json.loads(line) for f in out.glob("cal_*.jsonl") for line in f.read_text().splitlines()]
seconds = [e["seconds"] for e in events if e.get("event") == "epoch" and e["epoch"] == 2]
n = int(len(open_dataset("ferplus", "Training")) * 0.95)
n = min(n, limit) if limit else n
print(max(5, min(100, int(0.6 * budget / (max(seconds) * n / cal)))) if len(seconds) == runs else 40)
PY
}

# train_members RESERVE: the caller's `members PREFIX SECONDS EPOCHS ARGS...` over its MEMBER_RUNS, for ME epochs
# (auto: two epochs of CALIBRATE_IMAGES (4096) images per member, side by side as in the real run, set it with
# fit_epochs), stopped RESERVE seconds before the deadline
train_members() {
    local reserve=$1
    if [ "$ME" = auto ]; then
        local cal=${CALIBRATE_IMAGES:-4096}
        [ -n "${LIMIT:-}" ] && [ "$LIMIT" -lt "$cal" ] && cal=$LIMIT
        members cal_ 150 2 "${GPU[@]}" --limit "$cal" --val-split none
        ME=$(fit_epochs "$cal" "$(budget "$reserve")" "${#MEMBER_RUNS[@]}")
        rm -rf "$OUT"/cal_*/  # keep only their logs
    fi
    say "members: $ME epochs each; $(left)s left"
    members "" "$(budget "$reserve")" "$ME" "${GPU[@]}" "${LIMIT_ARGS[@]}"
}

# student NAME ARGS...: one EmoXNetLite distilled from TEACHER for SE epochs within STUDENT_TIME seconds, in the
# background (the caller waits)
student() {
    local name=$1
    shift
    run "$name" "$STUDENT_TIME" distill --recipe recipes/emoxnetlite.ferplus.json --teacher "$TEACHER" \
        --epochs "$SE" "${GPU[@]}" "${SGD[@]}" "${LIMIT_ARGS[@]}" "$@" &
}
