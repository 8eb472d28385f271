#!/usr/bin/env bash
# The project's whole GPU window in one job of under 10 minutes: check the GPU path, then train all three
# MMA-T runs. Prepared ahead so that a short allotment (15 minutes of machine time, one command of at most
# 10) goes to the work:
#   1. unpack the carried images (benchmarks/pack_data.py) and training states (benchmarks/pack_state.py),
#      and make the runs' LR images on the host's cores while the GPU checks run;
#   2. scan parity, scan speed, network, SwinIR-light and `mma.upscale` timings (gpu_check.py --all, with
#      the section budgets scaled to fit CHECK seconds); if a parity check fails, training keeps to the
#      sequential Triton kernel (MMA_TRITON_METHOD=sequential), which earlier H200 runs used;
#   3. the training job (gpu_train.py --parallel): step sweep, pick, the three runs side by side, each a
#      main run then a decay branch, all inside what is left of TOTAL seconds.
# $OUT gets gpu_train.log (everything printed, checks included), gpu_train.json, and per run its
# state.ckpt and a tar: the 8 files a job may bring back.
#
# Here, before the job (64 MiB travel with the working tree: the large tracked weight files stay behind):
#   python benchmarks/pack_data.py pack ../shared/data .devdata T91/HR BSDS200/HR
#   python benchmarks/pack_state.py pack .devstates weights/training/mma-t-x{2,3,4}
# On the GPU machine, with .devdata and .devstates carried:
#   bash benchmarks/gpu_job.sh 570 160
# Rehearsal on a CPU (tiny sizes; copies of the runs, nothing here is overwritten):
#   REHEARSE=1 bash benchmarks/gpu_job.sh 900 300
set -u
rm -f /tmp/gpu_job.env
total=${1:-570}   # seconds for the whole job
check=${2:-160}   # seconds for gpu_check.py
out=${OUT:-gpu-job-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
log="$out/gpu_train.log"
runs=(weights/training/mma-t-x2 weights/training/mma-t-x3 weights/training/mma-t-x4)
data=../shared/data
if [ -n "${REHEARSE:-}" ]; then
    scratch=$(mktemp -d)
    data=$scratch/data
    for run in "${runs[@]}"; do cp -r "$run" "$scratch/"; done
    runs=("$scratch"/mma-t-x2 "$scratch"/mma-t-x3 "$scratch"/mma-t-x4)
fi

{
    echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
    if [ -d .whl ]; then  # packages the machine lacks (spandrel, for SwinIR-light), carried as wheels
        $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
            export PYTHONPATH=$PYTHONPATH:/tmp/site
    fi
    $py -c "import numpy, PIL, torch, typer; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
'numpy', numpy.__version__, 'pillow', PIL.__version__)"
    $py -c "import triton; print('triton', triton.__version__)" || echo "triton: not importable"

    echo "== data and states"
    if [ -z "${REHEARSE:-}" ]; then
        $py benchmarks/pack_data.py unpack .devdata "$data" || exit 1
        $py benchmarks/pack_state.py unpack .devstates weights/training || exit 1
    fi
    for run in "${runs[@]}"; do  # the LR images of each run, on the host's cores, beside the GPU checks
        $py -c "
import json, sys
from mma.train.data import PairStore, training_images
cfg = json.load(open(sys.argv[1] + '/config.json'))
PairStore(training_images(cfg['train']), cfg['scale'], cache_dir=cfg['cache_dir'])
print('LR images ready:', sys.argv[1])" "$run" &
    done
    [ -n "${REHEARSE:-}" ] && wait  # the rehearsal's runs read other images: nothing to overlap

    echo "== GPU checks (${check} s at most)"
    quick=()
    [ -n "${REHEARSE:-}" ] && quick=(--quick)
    timeout "$check" $py benchmarks/gpu_check.py --all "${quick[@]}" --repeat 5 --budget-scale 0.3 \
        --upscale-model "${runs[0]%-x2}-x{scale}/ema.safetensors"
    status=$?
    echo "gpu_check exit status $status"
    if [ "$status" = 1 ]; then
        echo "a parity check failed: training keeps to the sequential Triton kernel"
        echo "export MMA_TRITON_METHOD=sequential" >/tmp/gpu_job.env
    fi
    wait  # the LR images
} 2>&1 | tee -a "$log"

[ -f /tmp/gpu_job.env ] && . /tmp/gpu_job.env
left=$((total - SECONDS))
echo "== training ($left s left)" | tee -a "$log"
rehearse=()
[ -n "${REHEARSE:-}" ] && rehearse=(--rehearse --data ../shared/data)
$py benchmarks/gpu_train.py --parallel --packed /nonexistent --budget "$left" --sweep-budget 50 \
    "${rehearse[@]}" "${runs[@]}"
echo "== $(date -u +%FT%TZ) job done after $SECONDS s" | tee -a "$log"
