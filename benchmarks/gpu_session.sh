#!/usr/bin/env bash
# One call's worth of GPU work on the lent machine (no package registry there; see ../shared/GPU.md).
# A cold start costs a minute or more of device time, so related runs go in one call.
#
#   bash benchmarks/gpu_session.sh tests     # GPU-marked tests + the fused-kernel tests   (~4 min)
#   bash benchmarks/gpu_session.sh engine    # bench_gpu: ours vs HF, offline, attention   (~3 min)
#   bash benchmarks/gpu_session.sh engine135 # bench_gpu, the 135M shape only, no HF        (~1 min)
#   bash benchmarks/gpu_session.sh quicktests  # attention kernels + the engine on the GPU (~1 min)
#   bash benchmarks/gpu_session.sh sampling  # bench_sampling_kernel                       (~2 min)
#   bash benchmarks/gpu_session.sh sweep     # the sampling kernel's launch shapes, bs 512 and 1 (~3 min)
#   bash benchmarks/gpu_session.sh tp        # bench_tp 8B at tp 1 2 (tp 1 alone on 1 GPU)  (~2 min)
#   bash benchmarks/gpu_session.sh loop      # the engine loop profiled: device idle gaps, host waits (~2 min)
#   bash benchmarks/gpu_session.sh ttft      # host time of a batch-1 first token, by part (~1 min)
#   bash benchmarks/gpu_session.sh attn      # decode attention: splits x keys per step x stages (~2 min)
#   bash benchmarks/gpu_session.sh merge     # decode attention: split merge in the last program vs a launch (~20 s)
#   bash benchmarks/gpu_session.sh startup   # Engine() start-up with prefill graphs on and off (~1 min)
#   bash benchmarks/gpu_session.sh profile   # kernels of one 135M batch-64 decode graph step (~1 min)
#   bash benchmarks/gpu_session.sh loop8b    # the 8B batch-64 loop as bench_gpu runs it (256 new tokens), kernels per step (~2 min)
#   bash benchmarks/gpu_session.sh gemm      # decode GEMMs (8B shapes): cuBLAS TN / NN vs kernels/skinny_gemm.py (~3 min)
#   bash benchmarks/gpu_session.sh samplingtests  # the fused sampling kernel's tests on the GPU (~1 min)
#   bash benchmarks/gpu_session.sh sweep512  # the sampling kernel's launch shapes incl. larger tiles, bs 512 and 1 (~3 min)
#   bash benchmarks/gpu_session.sh rope      # fused-prologue tests; rope+store inside decode attention vs two launches; 8B engine (~4 min)
#   bash benchmarks/gpu_session.sh gemmsteps # one decode step's GEMMs: launch variants with PDL (~1 min)
#   bash benchmarks/gpu_session.sh engine8b  # bench_gpu, the 8B shape only, no HF             (~2 min)
#   bash benchmarks/gpu_session.sh slots     # decode attention by KV slot layout (~1 min)
#   bash benchmarks/gpu_session.sh pdl       # PDL tests; decode-step GEMMs with PDL + L2 prefetch; 8B engine PDL off / on (~4 min)
#   bash benchmarks/gpu_session.sh extend    # extend attention launch shapes (BLOCK_N, warps, stages) (~1 min)
#   bash benchmarks/gpu_session.sh wordtiles # sampling tests + bs 512 / 1 launch sweep with SGL_LANG_WORD_TILES=1 (~4 min)
#   bash benchmarks/gpu_session.sh ncu       # Nsight Compute: bs-512 sampling kernels, the qkv decode GEMM -> $OUT/ncu_*.txt (~1 min)
#   bash benchmarks/gpu_session.sh tp70      # bench_tp 70B at tp 4, or tp 2 when 2 GPUs   (~2 min)
#   bash benchmarks/gpu_session.sh loopvsreplay  # 8B bs 64: kernels in the loop vs in a bare replay, PDL off; graph_vs_loop (~4 min)
#   bash benchmarks/gpu_session.sh steps     # profile_steps: 135M and 8B bs 64, step by step (~3 min)
#
#   bash benchmarks/gpu_session.sh flashinfer  # the flashinfer backend's tests, its kernels vs ours, engines on it (~6 min)
#   bash benchmarks/gpu_session.sh hybrid    # flashinfer tests; 8B bs 64 with triton vs flashinfer prefill (twice each) (~6 min)
#   bash benchmarks/gpu_session.sh attnloads # decode attention at 8B bs 64: warps x eviction x keys x stages x splits (~3 min)
#
#   bash benchmarks/gpu_session.sh tests:200 tp70:300   # a part's timeout can be given after a colon
#
#   bash benchmarks/gpu_session.sh prepare   # HERE, before the call: the default model's config and
#                                            # tokenizer files (no weights) into .gpu_tokenizer/
#
# Send `.whl` and `.gpu_tokenizer` along (carry: [".whl", ".gpu_tokenizer"]; .whl is filled here by
# ../shared/tools/gpu-wheels; tests/runtime/test_overlap_gpu.py skips without the tokenizer). Every part has
# its own timeout, so one hang does not eat the call, and each copies docs/benchmarks.md (the
# benchmarks rewrite their section there) to $OUT/benchmarks_<part>.md for merging back.
set -u
if [ "${1:-}" = prepare ]; then
    python -c "
import os, shutil
from sgl_lang.runtime.default_model import default_model_dir
src = default_model_dir(); os.makedirs('.gpu_tokenizer', exist_ok=True)
for f in os.listdir(src):
    if not f.endswith('.safetensors'):
        shutil.copy(os.path.join(src, f), '.gpu_tokenizer')
print('.gpu_tokenizer:', sorted(os.listdir('.gpu_tokenizer')))"
    exit
fi
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
    export PYTHONPATH=/tmp/site:$PWD
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "editable install failed"
export NCCL_NVLS_ENABLE=0 PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1
# flashinfer (optional; its wheel in .whl) compiles its kernels with nvcc through ninja, into a cache
# that a call may bring along as .fi_cache/fi_cache.tgz (the $OUT copy of an earlier call)
export PATH=/tmp/site/bin:$PATH FLASHINFER_WORKSPACE_BASE=/tmp/fiws
[ -f .fi_cache/fi_cache.tgz ] && mkdir -p /tmp/fiws && tar xzf .fi_cache/fi_cache.tgz -C /tmp/fiws
[ -d .gpu_tokenizer ] && export SGL_LANG_TOKENIZER_MODEL_DIR=$PWD/.gpu_tokenizer
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
NGPU=$(nvidia-smi --list-gpus | wc -l)

part() {  # part <name> <timeout s> <command...>
    local name=$1 limit=$2; shift 2
    echo "=== $name (timeout ${limit}s)"
    timeout "$limit" "$@" 2>&1 | grep -v "Warning" | tail -40
    echo "=== $name rc=${PIPESTATUS[0]}"
    cp docs/benchmarks.md "$OUT/benchmarks_${name}.md" 2>/dev/null
    pkill -f "multiprocessing.spawn" 2>/dev/null  # no orphaned TP rank left holding a GPU
}

for arg in "$@"; do
    what=${arg%%:*}; lim=${arg#*:}; [ "$lim" = "$arg" ] && lim=""  # name or name:seconds
    case $what in
        tests) part tests ${lim:-300} python3 -m pytest -q -p no:cacheprovider -o faulthandler_timeout=120 \
                   tests/kernels tests/runtime/test_overlap_gpu.py tests/runtime/test_prefill_graph_gpu.py \
                   tests/runtime/test_decode_gemm_gpu.py tests/distributed/test_tp_gpu.py ;;
        engine) part engine ${lim:-420} python3 -m benchmarks.bench_gpu ;;
        engine135) part engine135 ${lim:-120} python3 -m benchmarks.bench_gpu --shapes smollm2-135m --no-hf --no-offline --no-kernels --no-write ;;
        quicktests) part quicktests ${lim:-150} python3 -m pytest -q -p no:cacheprovider -o faulthandler_timeout=100 \
                   tests/kernels/test_attention_kernels.py tests/kernels/test_attention_backend.py tests/kernels/test_skinny_gemm.py \
                   tests/runtime/test_overlap_gpu.py tests/runtime/test_prefill_graph_gpu.py tests/runtime/test_decode_gemm_gpu.py ;;
        engine8b) part engine8b ${lim:-240} python3 -m benchmarks.bench_gpu --shapes llama-3.1-8b --no-hf --no-offline --no-kernels --no-write ;;
        sampling) part sampling ${lim:-300} python3 -m benchmarks.bench_sampling_kernel ;;
        sweep) part sweep ${lim:-240} python3 -m benchmarks.bench_sampling_kernel --sweep --no-write --bs 1 --vocab 128256 ;;
        tp) part tp ${lim:-300} python3 -m benchmarks.bench_tp --model llama-3.1-8b --tp 1 $([ "$NGPU" -ge 2 ] && echo 2) ;;
        ttft) part ttft ${lim:-120} bash -c "python3 -m benchmarks.bench_launch; python3 -m benchmarks.profile_ttft --shape smollm2-135m --prompt 512 --cprofile 45" ;;
        attn) part attn ${lim:-200} python3 -m benchmarks.bench_decode_attention ;;
        startup) part startup ${lim:-150} python3 -m benchmarks.bench_startup ;;
        merge) part merge ${lim:-90} python3 -m benchmarks.bench_decode_attention --merge ;;
        profile) part profile ${lim:-120} python3 -m benchmarks.profile_decode --shape smollm2-135m --bs 64 --ctx 768 ;;
        loop) part loop ${lim:-150} bash -c "python3 -m benchmarks.profile_decode --loop --shape smollm2-135m --bs 64 --ctx 512 &&
                                              python3 -m benchmarks.profile_decode --loop --shape llama-3.1-8b --bs 64 --ctx 512" ;;
        loop8b) part loop8b ${lim:-200} python3 -m benchmarks.profile_decode --loop --shape llama-3.1-8b --bs 64 --ctx 512 --out-len 256 ;;
        gemm) part gemm ${lim:-300} python3 -m benchmarks.bench_decode_gemm ;;
        samplingtests) part samplingtests ${lim:-240} python3 -m pytest -q -p no:cacheprovider -o faulthandler_timeout=120 \
                   tests/kernels/test_masked_sampling.py ;;
        sweep512) part sweep512 ${lim:-300} python3 -m benchmarks.bench_sampling_kernel --sweep-only \
                   --sweep-bs 512,1 --sweep-shapes 1024x8,2048x8,4096x8,4096x4,8192x8,1024x4 ;;
        rope) part rope ${lim:-400} bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_fused_prologue.py \
                   tests/kernels/test_attention_backend.py; python3 -m benchmarks.bench_decode_attention --rope;
                   for f in --no-fuse-rope ''; do echo \$f; python3 -m benchmarks.bench_gpu --shapes llama-3.1-8b --no-hf --no-offline \
                   --no-kernels --no-write \$f | grep -E '^[|] llama'; done" ;;
        gemmsteps) part gemmsteps ${lim:-200} python3 -m benchmarks.bench_decode_gemm --steps-only --m 64 ;;
        wordtiles) part wordtiles ${lim:-420} bash -c "export SGL_LANG_WORD_TILES=1; python3 -m pytest -q -p no:cacheprovider \
                   tests/kernels/test_masked_sampling.py; python3 -m benchmarks.bench_sampling_kernel --sweep-only \
                   --sweep-bs 512,1 --sweep-shapes 1024x8,2048x4,1024x4,2048x8" ;;
        ncu) part ncu ${lim:-300} bash -c 'for t in sample-greedy sample-temp gemm-qkv; do n=masked_sample; case $t in gemm*) n=skinny_gemm;; esac
                   ncu --kernel-name regex:$n --launch-skip 2 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
                   --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
                   python3 -m benchmarks.ncu_targets $t > $OUT/ncu_$t.txt 2>&1; echo "$t rc=$?"; done' ;;
        extend) part extend ${lim:-200} python3 -m benchmarks.bench_extend_attention ;;
        slots) part slots ${lim:-120} python3 -m benchmarks.bench_decode_attention --layouts ;;
        pdl) part pdl ${lim:-480} bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_skinny_gemm.py \
                   tests/runtime/test_decode_gemm_gpu.py -k pdl; python3 -m benchmarks.bench_decode_gemm --steps-only --m 64 48;
                   for d in 1 0; do echo disable_pdl=\$d; python3 -m benchmarks.bench_gpu --shapes llama-3.1-8b --no-hf \
                   --no-offline --no-kernels --no-write --flag disable_pdl=\$d | grep -E '^[|] llama'; done" ;;
        loopvsreplay) part loopvsreplay ${lim:-300} bash -c "python3 -m benchmarks.profile_decode --loop --shape llama-3.1-8b --bs 64 \
                   --ctx 512 --out-len 256 --flag disable_pdl=1 | head -40; python3 -m benchmarks.profile_decode --shape llama-3.1-8b \
                   --bs 64 --ctx 640 --flag disable_pdl=1; python3 -m benchmarks.graph_vs_loop" ;;
        steps) part steps ${lim:-240} bash -c "for s in smollm2-135m llama-3.1-8b; do python3 -m benchmarks.profile_steps --shape \$s; done" ;;
        flashinfer) part flashinfer ${lim:-480} bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_attention_backend.py \
                   tests/runtime/test_flashinfer_gpu.py; python3 -m benchmarks.bench_flashinfer_attention | tail -14;
                   python3 -m benchmarks.bench_gpu --shapes smollm2-135m,llama-3.1-8b --no-hf --no-offline --no-kernels \
                   --no-write --attention-backend flashinfer | grep -E '^[|] (llama|smollm)'" ;;
        hybrid) part hybrid ${lim:-500} bash -c "python3 -m pytest -q -p no:cacheprovider tests/runtime/test_flashinfer_gpu.py;
                   for p in triton flashinfer triton flashinfer; do echo prefill=\$p; python3 -m benchmarks.bench_gpu \
                   --shapes llama-3.1-8b --no-hf --no-offline --no-kernels --no-write --batches 64 \
                   --prefill-attention-backend \$p | grep -E '^[|] llama'; done" ;;
        attnloads) part attnloads ${lim:-300} bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_attention_kernels.py -k knobs;
                   python3 -m benchmarks.bench_decode_attention --loads | tail -16" ;;
        tp70) part tp70 ${lim:-400} python3 -m benchmarks.bench_tp --model llama-3.1-70b --tp $([ "$NGPU" -ge 4 ] && echo 4 || echo 2) ;;
        *) echo "unknown part $what (tests, engine, sampling, sweep, tp, tp70, profile, attn, loop, ttft, merge, startup, engine135, quicktests, loop8b, gemm, extend, engine8b, slots, pdl, gemmsteps, sweep512, samplingtests, rope, ncu, wordtiles, loopvsreplay, steps, flashinfer, hybrid, attnloads)" ;;
    esac
done
[ -d /tmp/fiws/.cache ] && (cd /tmp/fiws && tar czf "$OUT/fi_cache.tgz" .cache)
ls "$OUT"
