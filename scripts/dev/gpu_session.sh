#!/usr/bin/env bash
# Developer script for one lent-GPU call (sessions 6-7). PHASE=a: the GraphDecoder / compile_blocks GPU tests, then the
# end-to-end grid (benchmarks/e2e.py: compiled blocks, graph decode) into benchmarks/results, resuming rows already
# there; every result is copied to $OUT as it lands. PHASE=b: the kernel diagnostic (scripts/dev/sweep_session6.py), then
# the whole GPU test tier (junit XML to $OUT). PHASE=c: the GPU tier, then the backward sweep
# (scripts/dev/sweep_session6_bwd.py). PHASE=d (session 7): the forward/backward sweep (scripts/dev/sweep_session7.py),
# then the Triton GPU tests with the deferred forward loop. PHASE=e: the whole GPU tier, then the attention benchmark
# into benchmarks/results/attention_gpu_h200.json. PHASE=f (session 8): the Gluon forward (scripts/dev/sweep_session8.py); g: its check, the benchmark, the tier; h: the Gluon dK/dV; i (session 9): its configurations; j: the benchmark and
# the Triton GPU tests; k: the rest of the tier; l (session 10): tests, the sink-mask A/B, the benchmark; m: the tier and a clock trace; n: the benchmark; o: the dK/dV order A/B; p: order A/B, benchmark, the rest of the tier; q (session 11): the 128k study, the Triton GPU tests. Each step has its own timeout so the call returns inside the 600 s limit.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { echo $(( ${LIMIT:-585} - ($(date +%s) - T0) )); }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
e2e() {
    local t=$(( $(left) - 15 ))
    [ "$t" -gt 60 ] || { echo "e2e: no time left"; return; }
    timeout "$t" python3 benchmarks/e2e.py --device cuda --out benchmarks/results --budget-s $(( t - 45 )) 2>&1 | tee -a "$OUT/e2e.log"
    cp benchmarks/results/e2e_gpu_h200.json benchmarks/results/e2e_gpu_h200.rows.jsonl "$OUT/" 2>/dev/null
}
case "${PHASE:-a}" in
a)
    timeout 170 python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_graph_decode_gpu.py 2>&1 | tee "$OUT/gpu_tests_graph.log" | tail -15
    e2e ;;
b)
    timeout ${SWEEP_S:-150} python3 scripts/dev/sweep_session6.py 2>&1 | tee "$OUT/sweep.log" | tail -14
    timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu --junitxml="$OUT/gpu_tests.xml" \
        2>&1 | tee "$OUT/gpu_tests.log" | tail -25 ;;
c)
    timeout 300 python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu --junitxml="$OUT/gpu_tests.xml" \
        2>&1 | tee "$OUT/gpu_tests.log" | tail -12
    SWEEP_BUDGET_S=$(( $(left) - 40 )) timeout $(( $(left) - 10 )) python3 scripts/dev/sweep_session6_bwd.py 2>&1 \
        | tee "$OUT/sweep_bwd.log" | grep -v Warning | tail -20 ;;
d)
    SWEEP_BUDGET_S=${SWEEP_S:-250} timeout $(( ${SWEEP_S:-250} + 60 )) python3 scripts/dev/sweep_session7.py 2>&1 \
        | tee "$OUT/sweep.log" | grep -v Warning | tail -40
    SWAA_TRITON_DEFER=1 timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        --junitxml="$OUT/gpu_tests_defer.xml" 2>&1 | tee "$OUT/gpu_tests_defer.log" | tail -12 ;;
e)
    timeout 300 python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu --junitxml="$OUT/gpu_tests.xml" \
        2>&1 | tee "$OUT/gpu_tests.log" | tail -12
    timeout $(( $(left) - 10 )) python3 benchmarks/attention.py --out "$OUT/attention_gpu_h200.json" 2>&1 \
        | tee "$OUT/attention.log" | grep -v Warning | tail -30 ;;
f)
    # session 8: the Gluon forward's correctness grid, its timings if all pass, then the Triton GPU tests through it
    PART=check HANG_S=60 timeout 170 python3 scripts/dev/sweep_session8.py 2>&1 | tee "$OUT/check.log" | grep -v Warning \
        | tail -25
    cp sweep_session8_check.json "$OUT/" 2>/dev/null
    if grep -q "ALL OK" "$OUT/check.log"; then
        PART=${TPART:-time} SWEEP_BUDGET_S=${SWEEP_S:-200} timeout $(( ${SWEEP_S:-200} + 60 )) python3 scripts/dev/sweep_session8.py \
            2>&1 | tee "$OUT/time.log" | grep -v Warning | tail -40
        [ -n "${NO_TESTS:-}" ] || SWAA_TRITON_GLUON=1 timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider \
            tests/gpu/test_triton_gpu.py --junitxml="$OUT/gpu_tests_gluon.xml" 2>&1 | tee "$OUT/gpu_tests_gluon.log" | tail -12
    fi ;;
g)
    # session 8, last call: the Gluon forward (the default at head_dim 128 now) on its grid, the attention benchmark,
    # then the GPU tier, kernel tests first
    PART=check HANG_S=60 timeout 120 python3 scripts/dev/sweep_session8.py 2>&1 | tee "$OUT/check.log" | grep -v Warning \
        | tail -3
    if grep -q "ALL OK" "$OUT/check.log"; then
        timeout ${BENCH_S:-300} python3 benchmarks/attention.py --out "$OUT/attention_gpu_h200.json" 2>&1 \
            | tee "$OUT/attention.log" | grep -v Warning | tail -45
        timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
            tests/gpu/test_gpu_backends.py tests/gpu/test_graph_decode_gpu.py --junitxml="$OUT/gpu_tests.xml" 2>&1 \
            | tee "$OUT/gpu_tests.log" | tail -12
    fi ;;
h)
    # session 9, first call: the Gluon dK/dV kernel (not run before): its gradients and times, then its GPU tests
    PART=bwd HANG_S=60 SWEEP_BUDGET_S=240 timeout 300 python3 scripts/dev/sweep_session8.py 2>&1 | tee "$OUT/bwd.log" \
        | grep -v Warning | tail -30
    timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        -k gluon_dkdv --junitxml="$OUT/gpu_tests_gluon_bwd.xml" 2>&1 | tee "$OUT/gpu_tests_gluon_bwd.log" | tail -12 ;;
i)
    # session 9: the Gluon dK/dV's configurations, then the GPU tests that force it (default configuration)
    PART=bwdcfg HANG_S=60 SWEEP_BUDGET_S=${SWEEP_S:-200} timeout $(( ${SWEEP_S:-200} + 60 )) python3 \
        scripts/dev/sweep_session8.py 2>&1 | tee "$OUT/bwdcfg.log" | grep -v Warning | tail -40
    cp sweep_session8_bwdcfg.json "$OUT/" 2>/dev/null
    timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        -k gluon_dkdv --junitxml="$OUT/gpu_tests_gluon_bwd.xml" 2>&1 | tee "$OUT/gpu_tests_gluon_bwd.log" | tail -12 ;;
j)
    # session 9: the attention benchmark with the Gluon dK/dV on by default, then the Triton GPU tests (both
    # forward and both dK/dV kernels)
    timeout ${BENCH_S:-360} python3 benchmarks/attention.py --out "$OUT/attention_gpu_h200.json" 2>&1 \
        | tee "$OUT/attention.log" | grep -v Warning | tail -45
    timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        --junitxml="$OUT/gpu_tests_triton.xml" 2>&1 | tee "$OUT/gpu_tests_triton.log" | tail -12 ;;
k)
    # session 9: the rest of the GPU tier
    timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu --deselect \
        tests/gpu/test_triton_gpu.py --junitxml="$OUT/gpu_tests_rest.xml" 2>&1 | tee "$OUT/gpu_tests_rest.log" | tail -12 ;;
l)
    # session 10: the Triton GPU tests on the new masks and dQ preamble; then the per-key sink mask against the per-pair
    # rule (SWAA_TRITON_SINK_ONLY_MASK=0), alternating processes; then the attention benchmark
    timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        --junitxml="$OUT/gpu_tests_triton.xml" 2>&1 | tee "$OUT/gpu_tests_triton.log" | tail -6
    for r in 1 2; do
        TAG=on$r FLEX=$([ $r = 1 ] && echo 1) PART=ab timeout 90 python3 scripts/dev/sweep_session10.py 2>&1 \
            | grep -v -i warn | cut -c1-220
        SWAA_TRITON_SINK_ONLY_MASK=0 TAG=off$r PART=ab timeout 90 python3 scripts/dev/sweep_session10.py 2>&1 \
            | grep -v -i warn | cut -c1-220
    done
    timeout $(( $(left) - 10 )) python3 benchmarks/attention.py --out "$OUT/attention_gpu_h200.json" 2>&1 \
        | tee "$OUT/attention.log" | grep -v Warning | tail -45 ;;
m)
    # session 10: the GPU tier at the final kernels (Triton tests first), with the clock trace of the forward between
    timeout 230 python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        --junitxml="$OUT/gpu_tests_triton.xml" 2>&1 | tee "$OUT/gpu_tests_triton.log" | tail -6
    PART=clock timeout 60 python3 scripts/dev/sweep_session10.py 2>&1 | grep -v -i warn | cut -c1-300
    timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu --deselect \
        tests/gpu/test_triton_gpu.py --junitxml="$OUT/gpu_tests_rest.xml" 2>&1 | tee "$OUT/gpu_tests_rest.log" | tail -8 ;;
o)
    # session 10: the Triton GPU tests, the dK/dV launch order against the old one (SWAA_TRITON_DKDV_ORDER=0) in
    # alternating processes, the forward's clock trace
    timeout 230 python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        --junitxml="$OUT/gpu_tests_triton.xml" 2>&1 | tee "$OUT/gpu_tests_triton.log" | tail -6
    for r in 1 2; do
        AB_MODES=fwdbwd TAG=order$r PART=ab timeout 80 python3 scripts/dev/sweep_session10.py 2>&1 \
            | grep -v -i warn | cut -c1-250
        SWAA_TRITON_DKDV_ORDER=0 AB_MODES=fwdbwd TAG=order0_$r PART=ab timeout 80 python3 scripts/dev/sweep_session10.py \
            2>&1 | grep -v -i warn | cut -c1-250
    done
    PART=clock timeout 60 python3 scripts/dev/sweep_session10.py 2>&1 | grep -v -i warn | cut -c1-300 ;;
p)
    # session 10, last call: dK/dV order 1 (far programs first) against 0 (before) in alternating processes; the
    # faster at 32k + 128k (S=100) runs the attention benchmark of record; then the rest of the GPU tier
    for r in 1 2; do
        for o in 1 0; do
            SWAA_TRITON_DKDV_ORDER=$o AB_MODES=fwdbwd TAG=o${o}_$r PART=ab timeout 80 python3 scripts/dev/sweep_session10.py \
                2>&1 | grep -v -i warn | cut -c1-200
        done
    done
    WIN=$(python3 -c "
import json, glob, collections
t = collections.defaultdict(float)
for f in glob.glob('$OUT/sweep_session10_abo*.json'):
    for r in json.load(open(f))['rows']:
        if r['keep_first'] == 100:
            t[r['tag'][1]] += r['ms'] / (1 if r['n'] == 32768 else 4)
print(min(t, key=t.get) if t else 1)")
    echo "dK/dV order for the benchmark: $WIN" | tee "$OUT/dkdv_order.txt"
    SWAA_TRITON_DKDV_ORDER=$WIN timeout 300 python3 benchmarks/attention.py --out "$OUT/attention_gpu_h200.json" 2>&1 \
        | tee "$OUT/attention.log" | grep -v Warning | grep qwen3 | grep -v decode | tail -30
    SWAA_TRITON_DKDV_ORDER=$WIN timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu \
        --deselect tests/gpu/test_triton_gpu.py --junitxml="$OUT/gpu_tests_rest.xml" 2>&1 | tee "$OUT/gpu_tests_rest.log" \
        | tail -8 ;;
n)
    # session 10: the attention benchmark of record
    timeout $(( $(left) - 10 )) python3 benchmarks/attention.py --out "$OUT/attention_gpu_h200.json" 2>&1 \
        | tee "$OUT/attention.log" | grep -v Warning | tail -12 ;;
q)
    # session 11 (written without a GPU): the Gluon dQ's check and timings, the 128k study
    # (scripts/dev/sweep_session11.py: batch x length, layouts, utilisation trace, ncu if installed), then the
    # Triton GPU tests at this commit (the session-10 record ran them at two earlier commits) with the time left
    PART=dq HANG_S=60 SWEEP_BUDGET_S=150 timeout 200 python3 scripts/dev/sweep_session11.py 2>&1 | grep -v -i warn \
        | cut -c1-220 | tail -30
    PART=mem SWEEP_BUDGET_S=150 timeout 200 python3 scripts/dev/sweep_session11.py 2>&1 | grep -v -i warn | cut -c1-220 \
        | tail -40
    PART=prof timeout 120 python3 scripts/dev/sweep_session11.py 2>&1 | grep -v -i warn | cut -c1-220 | tail -10
    timeout $(( $(left) - 10 )) python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_triton_gpu.py \
        --junitxml="$OUT/gpu_tests_triton.xml" 2>&1 | tail -8 ;;
esac
echo "call took $(( $(date +%s) - T0 )) s"
