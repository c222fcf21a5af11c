#!/usr/bin/env bash
# The whole GPU check in one command; everything lands in $OUT_DIR.
#   OUT_DIR=out/gpu bash scripts/gpu_check.sh
# 1. environment facts, 2. measured peaks, 3. MPT shapes with random bf16 weights at input 512,
# output 64 under each backend, side by side in one run per model, 4. where MPT-7B's batch-1
# decode step spends its time (benchmarks/decode_profile.py: kernels vs. host), 5. the GPU-only tests.
# Knobs (environment), with the full check's defaults:
#   MODELS="7b 1b"  BATCHES=1,8,32  BACKENDS=static_loop,hf_compiled,hf_generate
#   PROFILE=1 (step 4)  GPU_TESTS="" (a pytest -k expression; "none" skips step 5)
# Steps have their own time limits (at most 16 minutes in all), so a slow one cannot take the
# later ones with it; rows are written as they are measured. Timed on one H100: MPT-7B at batch
# 1 under the three backends 128 s, the profile 119 s; BACKENDS=hf_compiled,hf_generate PROFILE=0
# (both models, all batches, the tests) 6.5 minutes. BUNDLE=1 packs everything into one archive,
# $OUT_DIR/gpu_check.tgz. Packages missing on the machine can be carried as wheels in .whl/
# (installed to /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT_DIR:-out/gpu}"
MODELS="${MODELS:-7b 1b}"
BATCHES="${BATCHES:-1,8,32}"
BACKENDS="${BACKENDS:-static_loop,hf_compiled,hf_generate}"
PROFILE="${PROFILE:-1}"
GPU_TESTS="${GPU_TESTS:-}"
mkdir -p "$OUT_DIR/results"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT_DIR/log.txt"; }
quiet() { grep -v "^[WI][0-9]\{4\} \|^USDT:"; }  # glog lines from the profiler and compiler

log "environment"
{ nvidia-smi; python3 -c "import torch, transformers, sys; print('python', sys.version.split()[0]); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0)); \
print('transformers', transformers.__version__)"; } > "$OUT_DIR/env.txt" 2>&1
tail -4 "$OUT_DIR/env.txt"

log "measured peaks"
timeout 60 python3 - > "$OUT_DIR/peaks.json" <<'PY'
import json, torch
from llmbench.roofline import lookup_peaks, measure_peaks
name = torch.cuda.get_device_name(0)
out = {"device_name": name}
for dtype, tdtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
    m = measure_peaks(torch.device("cuda"), tdtype)
    out[dtype] = {"measured_memory_bandwidth_gbs": m.memory_bandwidth_gbs, "measured_tflops": m.tflops,
                  "datasheet": vars(lookup_peaks(name, dtype))}
print(json.dumps(out, indent=1))
PY
cat "$OUT_DIR/peaks.json"

SWEEP=("batch_sizes=[$BATCHES]" input_lengths=[512] output_lengths=[64] "backends=[$BACKENDS]"
       num_batches=5 num_warmup_batches=3 "results_dir=$OUT_DIR/results")
for model in $MODELS; do
  log "MPT-$model: $BACKENDS at batch $BATCHES"
  timeout "$([ "$model" = 7b ] && echo 360 || echo 240)" python3 benchmark.py "yamls/$model.yaml" "${SWEEP[@]}" 2>&1 \
    | tee "$OUT_DIR/mpt-$model.txt" | quiet
done

if [ "$PROFILE" = "1" ]; then
  log "MPT-7b decode step: kernels vs. host, batch 1"
  timeout 180 python3 benchmarks/decode_profile.py yamls/7b.yaml batch_sizes=[1] input_lengths=[512] \
    output_lengths=[64] "backends=[$BACKENDS]" --out "$OUT_DIR" 2>&1 | tee "$OUT_DIR/decode_profile.txt" | quiet
fi

if [ "$GPU_TESTS" != "none" ]; then
  log "GPU-only tests ${GPU_TESTS:+(-k $GPU_TESTS)}"
  timeout 90 python3 -m pytest -q -m gpu ${GPU_TESTS:+-k "$GPU_TESTS"} tests 2>&1 | tee "$OUT_DIR/gpu_tests.txt" | tail -15
fi
log "done"
if [ "${BUNDLE:-0}" = "1" ]; then
  (cd "$OUT_DIR" && tar czf /tmp/gpu_check.tgz . && find . -mindepth 1 -delete && mv /tmp/gpu_check.tgz .)
fi
