#!/usr/bin/env bash
# The CPU side-by-side with PyTorch eager (issue #20): every workload of the "CPU: lite_jax vs
# PyTorch eager" table in benchmarks/RESULTS.md, ours and the torch peer in the same process.
#   pip install -r requirements-bench.txt     # torch (CPU build), once
#   bash benchmarks/cpu_session.sh                            # every stage, < 20 min on 2 cores
#   bash benchmarks/cpu_session.sh leakage gan_compression    # some stages only
#   TORCH_THREADS=1 OUT=/tmp/one_thread bash benchmarks/cpu_session.sh   # torch on one thread
# Each stage runs under its own time cap and writes its JSON lines, command and log to $OUT
# (default /tmp/lite_jax_cpu_results), with the load average before and after it: other jobs
# on the cores slow both sides, and PyTorch's OpenMP threads more than XLA's. At the end the
# table's rows are printed (python -m benchmarks.peers.table $OUT) for RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/lite_jax_cpu_results}"
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(leakage gan_compression lite_transformer pvcnn)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"
# TORCH_THREADS=n pins PyTorch's intra-op threads (OMP_NUM_THREADS; XLA does not read it);
# unset, torch keeps its default of one per core, the setting of the table.
[ -z "${TORCH_THREADS:-}" ] || export OMP_NUM_THREADS="$TORCH_THREADS"
python3 -c "import torch" 2>/dev/null || {
  echo "torch is not installed (pip install -r requirements-bench.txt): nothing to compare."
  exit 2; }
{ echo "cores: $(nproc)"; grep -m1 "model name" /proc/cpuinfo
  python3 -c "import jax, torch; print('jax', jax.__version__, 'torch', torch.__version__,
torch.get_num_threads(), 'torch threads')"
} 2>&1 | tee "$out/device.txt"

stage() {  # stage NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2; shift 2
  local start=$SECONDS
  echo "$*" > "$out/$name.cmd"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" > "$out/$name.load"
  timeout "$cap" "$@" > "$out/$name.jsonl" 2> "$out/$name.log"
  local rc=$?
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/$name.load"
  echo "== $name: rc=$rc in $((SECONDS - start)) s, $(grep -c '^{' "$out/$name.jsonl") JSON" \
       "lines; $(tr '\n' ' ' < "$out/$name.load")"
  [ "$rc" = 0 ] || tail -n 5 "$out/$name.log"
}

for what in "${stages[@]}"; do
  case "$what" in
    leakage) stage leakage 150 python3 -m benchmarks.leakage --peer=torch --steps=10 \
               --num_attacks=1 --batch_size=0 --repeats=2 ;;
    gan_compression) stage gan_compression 240 python3 -m benchmarks.gan_compression \
               --peer=torch --dtypes=float32 --batches=1 --subnets=16_16_24_16_32_64_16_24 \
               --depthwise_impls=shifts,conv --repeats=5 ;;
    lite_transformer) stage lite_transformer 600 python3 benchmarks/lite_transformer.py \
               --peer=torch --dtype=float32 --batch=8 --length=40 --vocab=32768 --steps=2 \
               --decode_batch=4 ;;
    pvcnn) stage pvcnn_kernels 120 python3 -m benchmarks.pvcnn --peer=torch --only=kernels \
             --sizes=8x2048x64x32 --nopallas --dtypes=float32 --repeats=10
           stage pvcnn_models 240 python3 -m benchmarks.pvcnn --peer=torch --only=models \
             --models=pvcnn_c0p25,pvcnn_c1 --model_backends=auto --repeats=5 ;;
    *) echo "unknown stage $what (leakage, gan_compression, lite_transformer, pvcnn)"
       exit 2 ;;
  esac
done
python3 -m benchmarks.peers.table "$out"
