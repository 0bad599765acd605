#!/usr/bin/env bash
# Run THERE, on the lent GPU machine, as the `run` command (carry: [".whl"]):
#   bash benchmarks/gpu/session.sh tests pvcnn lite_transformer      # first call, <= 7.5 minutes
#   bash benchmarks/gpu/session.sh gan_compression leakage           # second call, <= 4 minutes
#   bash benchmarks/gpu/session.sh haq automl energy                 # if time is left, <= 5 minutes
#   bash benchmarks/gpu/session.sh peers                             # if time is left, <= 7 minutes
#   bash benchmarks/gpu/session.sh psd ppd                           # if time is left, <= 5 minutes
# `peers` times the PyTorch eager peers (benchmarks/peers/, the image's torch on CUDA) beside
# ours on the CPU table's workloads at GPU sizes (issue #20); the stages above run without them
# so that their caps stay as measured.
# Each stage runs under its own time cap, so one slow stage cannot eat the others' time, and
# writes its JSON lines and log under $OUT (they come back even when a stage is cut off).
# The first two calls' caps add up to ~11.5 minutes, which with the machine's start fits the 15
# minutes of device time a session gets; the third runs only when a session has time left. Copy the numbers with the device name into benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-gpu_results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH=".:${PYTHONPATH:-}"
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  python3 -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
} 2>&1 | tee "$out/device.txt"

stage() {  # stage NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2; shift 2
  local start=$SECONDS
  timeout "$cap" "$@" > "$out/$name.jsonl" 2> "$out/$name.log"
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - start)) s, $(grep -c '^{' "$out/$name.jsonl") JSON lines"
  [ "$rc" = 0 ] || tail -n 5 "$out/$name.log"
}

for what in "$@"; do
  case "$what" in
    tests) stage gpu_tests 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels ;;
    pvcnn) stage pvcnn_kernels 150 python3 -m benchmarks.pvcnn --only=kernels
           stage pvcnn_models 60 python3 -m benchmarks.pvcnn --only=models ;;
    lite_transformer) stage lite_transformer 130 python3 benchmarks/lite_transformer.py ;;
    gan_compression) stage gan_compression 120 python3 -m benchmarks.gan_compression ;;
    leakage) stage leakage 120 python3 -m benchmarks.leakage ;;
    haq) stage haq 120 python3 -m benchmarks.haq --width=1 --image_size=224 --batch=64 ;;
    automl) stage automl 120 python3 -m benchmarks.automl --space=imagenet --search_batch=64 ;;
    energy) stage energy 90 python3 -m benchmarks.energy --iterations=100 --svr_rows=5000 --sk_members=2 ;;
    peers) stage peers_leakage 60 python3 -m benchmarks.leakage --peer=torch --steps=10 \
             --num_attacks=1 --batch_size=0
           stage peers_gan_compression 90 python3 -m benchmarks.gan_compression --peer=torch \
             --subnets=16_16_24_16_32_64_16_24 --depthwise_impls=conv --repeats=20
           stage peers_lite_transformer 150 python3 benchmarks/lite_transformer.py --peer=torch \
             --steps=8 --presets=wmt14_enfr_lite_d496,wmt14_enfr_transformer_d320
           stage peers_pvcnn 100 python3 -m benchmarks.pvcnn --peer=torch --nopallas \
             --sizes=8x2048x64x32,16x16384x64x32 --models=pvcnn_c0p25,pvcnn_c1 \
             --model_backends=auto ;;
    psd) stage psd 150 python3 -m benchmarks.psd --batch_size=32 --image_size=128 ;;
    ppd) stage ppd_simulation 150 python3 -m benchmarks.ppd_simulation --scenes=100 --mjx_batch=64 \
           --train_steps=20 ;;
    *) echo "unknown stage $what (tests, pvcnn, lite_transformer, gan_compression, leakage, haq," \
            "automl, energy, peers, psd, ppd)"
       exit 2 ;;
  esac
done
