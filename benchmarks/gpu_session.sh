#!/usr/bin/env bash
# One job on a GPU machine that checks the GPU path and trains a little on the side, prepared ahead so
# that a short allotment (e.g. 15 minutes) goes to the work. A job that is mostly training (a sweep of
# batch and patch sizes, main runs continued at the chosen batch, decay branches for release) is
# benchmarks/gpu_train.py, the training entry point; this script keeps the run's own recipe:
#   1. scan backends on CUDA against the float64 reference, half precision, scan speed (gpu_check.py);
#      when a parity check fails, the rest runs on the pure-PyTorch scan (MMA_SCAN_BACKEND=torch);
#   2. training-step time of the run's recipe (bench_train.py), which sizes the burst;
#   3. a training burst: resume RUN_DIR on the GPU for about BURST seconds with a larger --iters, sized
#      from the measured step to end inside them. The burst continues the run at its own rate: the
#      learning rate is a function of the iteration and the saved schedule, and a larger --iters does not
#      rescale milestones (since 2026-11-29), so a constant main run simply runs on to the larger --iters
#      (undecayed: branch it for a release, docs/training.md); the run's files are copied to $OUT as soon
#      as it stops;
#   4. whole-network speed, then mma.upscale with the bundled weights of the run's scale in
#      fp32/bf16/fp16 on Set5 and Set14 (gpu_upscale.py).
# Stages after the burst get whatever is left of TOTAL seconds, so the job ends inside its limit.
#
# Here, before the job (the data only fits the 64 MiB a job may carry as lossless WebP):
#   python benchmarks/pack_data.py pack ../shared/data .devdata T91/HR BSDS200/HR Set5/HR Set14/HR
# Then, on the GPU machine (with .devdata copied beside the working tree):
#   bash benchmarks/gpu_session.sh weights/training/mma-t-x3 240 440
set -u
run=${1:?usage: gpu_session.sh RUN_DIR [BURST_SECONDS] [TOTAL_SECONDS]}
burst=${2:-240}
total=${3:-440}
out=${OUT:-gpu-session-out}
data=${DATA_ROOT:-../shared/data}  # where the run's config expects the images
device=${DEVICE:-cuda}              # DEVICE=cpu rehearses the script on a small run
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
exec > >(tee -a "$out/session.log") 2>&1

left() {  # seconds of TOTAL still unspent, less a margin for copying the results back
    echo $((total - SECONDS - 15))
}

echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
$py -c "import numba, numpy, PIL, torch, typer; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
'numpy', numpy.__version__, 'numba', numba.__version__, 'pillow', PIL.__version__, 'typer', typer.__version__)"
$py -c "import triton; print('triton', triton.__version__)" || echo "triton: not importable"

echo "== data"
$py benchmarks/pack_data.py unpack .devdata "$data" || exit 1

echo "== scan checks"
if ! timeout 150 $py benchmarks/gpu_check.py --repeat 5; then
    echo "scan checks failed or ran out of time: the rest uses MMA_SCAN_BACKEND=torch"
    export MMA_SCAN_BACKEND=torch
fi

echo "== training step"
scale=$($py -c "import json, sys; print(json.load(open(sys.argv[1]))['scale'])" "$run/config.json")
patch=$($py -c "import json, sys; print(json.load(open(sys.argv[1]))['patch'])" "$run/config.json")
timeout 90 $py benchmarks/bench_train.py --device "$device" --data "$data/T91/HR" --scale "$scale" \
    --patch "$patch" --warmup 3 --steps 20 | tee /tmp/bench_train.txt
step=$(sed -n 's/^step: \([0-9.]*\) s\/it.*/\1/p' /tmp/bench_train.txt)
start=$($py -c "import torch, sys; print(torch.load(sys.argv[1], weights_only=True)['iteration'])" "$run/state.ckpt")
# 20 s for data preparation, validations and checkpoints; 10% slack on the measured step.
iters=$($py -c "import sys; print(int(sys.argv[1]) + int((int(sys.argv[2]) - 20) / (1.1 * float(sys.argv[3] or 1))))" \
    "$start" "$burst" "$step")
echo "== burst: $run from iteration $start to $iters at its own rate (${step:-?} s/it measured)"
timeout --foreground -k 30 "$burst" $py -m mma train --resume --out "$run" --iters "$iters" --device "$device" 2>"$out/burst.log"
echo "burst exit status $?"
tr '\r' '\n' <"$out/burst.log" | grep -v -e '^training:' -e '^preparing LR images:' -e '^ *$' | tail -n 15
tail -n 3 "$run/train_log.csv"
cat "$run/val_log.csv"
cp "$run"/{state.ckpt,ema.safetensors,train_log.csv,val_log.csv,config.json} "$out"/

echo "== network speed"
[ "$(left)" -gt 20 ] && timeout "$(left)" $py benchmarks/gpu_check.py --network-only --repeat 5
echo "== upscale precisions"
[ "$(left)" -gt 20 ] && timeout "$(left)" $py benchmarks/gpu_upscale.py "$data/Set5/HR" "$data/Set14/HR" \
    --scales "$scale"
echo "== $(date -u +%FT%TZ) done after $SECONDS s"
