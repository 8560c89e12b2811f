#!/usr/bin/env bash
# The GPU checks of docs/results.md in one call (about 6 minutes on one H100 / H200 before the SAM
# steps; refine + train took 80 s on an H200; the SAM steps alone: STEPS="sam sam_loose", <= 8 min):
#   refine      batched IOM / CPI vs per-candidate loops, 8 x 128 candidates at 480x480, on the GPU
#   refine_cpu  the same on the same machine's CPU (the CPU figure to compare with)
#   train       one training step of the paper's model (lavt-swin-b-random: LAVT exactly, Swin-B
#               480 + BERT-base, random weights), LAVT's batch 8 per GPU, fp32 vs bf16 autocast:
#               images/s, peak GPU memory, and a profile of 3 steps (top operators by GPU time,
#               share of the step the GPU is busy)
#   train_ts    the same at the SemiRES teacher-student student batch (3 labeled + 3 unlabeled = 6)
#               and the SemiRES burn-in batch (2)
#   train_mem   peak GPU memory of one training step of the paper's model per per-GPU batch
#               1 / 2 / 4 / 8, activation checkpointing none / backbone / backbone+text, fp32 and
#               bf16 (max_memory_allocated / reserved; prints the largest measured batch that
#               fits 12 / 24 / 48 / 80 GB at 90% of the card): the table docs/training.md asks
#               for (issue 32). Not run yet: prepared in a session without a device.
#   eval_imported  import-lavt of a random paper-size checkpoint, semires.load, and evaluation
#               forwards at 480 (batch 1 as LAVT's test.py, and 16), fp32 vs bf16: sentences/s
#   sam         SAM ViT-H everything mode at the library defaults (32 x 32 points; random weights),
#               side by side on 3 real COCO photos + 2 synthetic images: SamAutomaticMaskGenerator
#               called directly vs our generator (prefiltered decoding), bf16 image encoder, and
#               torch.compile of the bf16 encoder: s / image, encoder and decoding s, candidates,
#               identical to the library's or not; the encoder over 4 images at once vs one by one
#   sam_loose   the same at 16 x 16 points with the quality filters off (--loose: every mask
#               passes, so the candidate sets compared are large): library vs ours, ours without
#               prefilter, points_per_batch 256
#               (32 x 32 points with --loose keeps 3,072 full-size masks per image and ran past
#               150 s on an H200 before its first figure, with the old benchmark)
# Each step has its own time limit; its output goes to OUT_DIR/<step>.txt (and .json).
#
# usage: bash bench/gpu_checks.sh [OUT_DIR]        (default: $OUT, else runs/gpu_checks)
#        DEVICE=cpu QUICK=1 bash bench/gpu_checks.sh /tmp/x   (a fast dry run of the script)
#        STEPS="train train_ts_b6 train_ts_b2 eval_imported" bash bench/gpu_checks.sh $OUT
#        STEPS="train_mem" bash bench/gpu_checks.sh $OUT   (issue 32's memory table alone, ~4 min)
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
    train_mem=(--model test-lavt --size 64 --batch 1 2 --checkpoint none backbone+text --amp none)
    sam=(--model tiny --images synth:1 --points-per-side 4 --sides library,ours)
    sam_loose=(--model tiny --images synth:1 --points-per-side 4 --loose --sides library,ours)
else
    refine=()
    train=(--model lavt-swin-b-random --batch 8 --size 480 --steps 10 --warmup 3 --profile 3)
    train_ts=(--model lavt-swin-b-random --size 480 --steps 10 --warmup 3)
    eval_imported=(--model lavt-swin-b-random --size 480 --batch 1 16 --repeats 10)
    train_mem=(--model lavt-swin-b-random --size 480 --batch 1 2 4 8
               --checkpoint none backbone backbone+text --amp none bf16)
    sam=(--model vit_h --images real:3,synth:2 --points-per-side 32 --warmup 1 --encoder-batch 4
         --sides library,ours,ours-bf16,ours-compile-bf16)
    sam_loose=(--model vit_h --images real:3,synth:1 --points-per-side 16 --loose
               --sides library,ours,ours-plain,ours-ppb256)
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
step train_mem 240 "$py" bench/bench_train.py --memory "${train_mem[@]}" --device "$device" \
    --json "$out/train_mem.json"
step eval_imported 150 "$py" bench/bench_eval_imported.py "${eval_imported[@]}" --device "$device" \
    --amp none bf16 --json "$out/eval_imported.json"
step sam 300 "$py" bench/bench_sam.py --device "$device" "${sam[@]}" --out "$out/sam.jsonl"
step sam_loose 180 "$py" bench/bench_sam.py --device "$device" "${sam_loose[@]}" \
    --out "$out/sam_loose.jsonl"
echo "gpu_checks: $failed step(s) failed; outputs in $out"
exit "$failed"
