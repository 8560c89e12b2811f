#!/usr/bin/env bash
# The GPU checks of docs/results.md in one call (about 6 minutes on one H100 / H200; refine + train took 80 s on an H200):
#   refine      batched IOM / CPI vs per-candidate loops, 8 x 128 candidates at 480x480, on the GPU
#   refine_cpu  the same on the same machine's CPU (the CPU figure to compare with)
#   train       one training step of the paper's model (lavt-swin-b-random: LAVT exactly, Swin-B
#               480 + BERT-base, random weights), LAVT's batch 8 per GPU, fp32 vs bf16 autocast:
#               images/s, peak GPU memory, and a profile of 3 steps (top operators by GPU time,
#               share of the step the GPU is busy)
#   train_ts    the same at the SemiRES teacher-student student batch (3 labeled + 3 unlabeled = 6)
#               and the SemiRES burn-in batch (2)
#   eval_imported  import-lavt of a random paper-size checkpoint, semires.load, and evaluation
#               forwards at 480 (batch 1 as LAVT's test.py, and 16), fp32 vs bf16: sentences/s
#   sam         SAM ViT-H automatic mask generator (random weights, --loose), fp32 vs bf16 image
#               encoder, 16 x 16 points, points_per_batch 64: images/s and bf16 agreement
#               (32 x 32 points with --loose keeps 3,072 full-size masks per image and ran past
#               150 s on an H200 before its first figure)
# Each step has its own time limit; its output goes to OUT_DIR/<step>.txt (and .json).
#
# usage: bash bench/gpu_checks.sh [OUT_DIR]        (default: $OUT, else runs/gpu_checks)
#        DEVICE=cpu QUICK=1 bash bench/gpu_checks.sh /tmp/x   (a fast dry run of the script)
#        STEPS="train train_ts_b6 train_ts_b2 eval_imported" bash bench/gpu_checks.sh $OUT
#            (only the named steps: the LAVT checks of docs/model.md fit one 10-minute call)
#
# It needs a python3 with torch, timm and transformers (the device machine's has them). The
# packages such a machine lacks travel as wheels in ./.whl and are installed from there first;
# make them once on a machine with a package index (.whl is ignored by git):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl pycocotools segment-anything
# and pass `carry: [".whl"]` to the device call.
set -u
out=${1:-${OUT:-runs/gpu_checks}}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/semires_site .whl/*.whl && export PYTHONPATH=/tmp/semires_site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

if [ "${QUICK:-0}" = 1 ]; then
    refine=(--batch 2 --candidates 16 --size 96 --repeats 2)
    train=(--model test-tiny --batch 2 --size 64 --steps 2 --warmup 1 --profile 1)
    train_ts=(--model test-lavt --size 64 --steps 2 --warmup 1)
    eval_imported=(--model test-lavt --size 64 --batch 1 2 --repeats 2)
    sam=(--model tiny --images 1 --batches 16 --loose)
else
    refine=()
    train=(--model lavt-swin-b-random --batch 8 --size 480 --steps 10 --warmup 3 --profile 3)
    train_ts=(--model lavt-swin-b-random --size 480 --steps 10 --warmup 3)
    eval_imported=(--model lavt-swin-b-random --size 480 --batch 1 16 --repeats 10)
    sam=(--model vit_h --images 3 --points-per-side 16 --batches 64 --loose)
fi

failed=0
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
        return 0
    fi
    echo "== $name: $*" | tee "$out/$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc" | tee -a "$out/$name.txt"
    [ "$rc" = 0 ] || failed=$((failed + 1))
}

{ nvidia-smi 2>&1 || echo "no nvidia-smi"; "$py" -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } \
    > "$out/machine.txt"
step refine 120 "$py" bench/bench_refine.py --device "$device" "${refine[@]}"
step refine_cpu 150 "$py" bench/bench_refine.py --device cpu "${refine[@]}"
step train 180 "$py" bench/bench_train.py "${train[@]}" --device "$device" --amp none bf16 \
    --json "$out/train.json"
for b in 6 2; do
    step "train_ts_b$b" 120 "$py" bench/bench_train.py "${train_ts[@]}" --batch "$b" --device "$device" \
        --amp none bf16 --json "$out/train_ts_b$b.json"
done
step eval_imported 150 "$py" bench/bench_eval_imported.py "${eval_imported[@]}" --device "$device" \
    --amp none bf16 --json "$out/eval_imported.json"
step sam 200 "$py" bench/bench_sam.py --device "$device" "${sam[@]}" --json "$out/sam.json"
echo "gpu_checks: $failed step(s) failed; outputs in $out"
exit "$failed"
