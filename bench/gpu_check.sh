#!/usr/bin/env bash
# bench/gpu_check.sh: one prepared check of sgn on a CUDA machine, at most 8 minutes
# (issue 13, section 5). Each stage runs under its own `timeout` (the limits below add up
# to under 8 minutes) and logs to OUT/logs/STAGE.log:
#   setup       only when an import fails: install sgn's dependencies from --wheels
#   cuda_tests  the tests that skip without CUDA (`pytest -k cuda` on the files that use it)
#   data        a small single-bank SynthMUSIC, rendered with pretty_midi's TimGM6mb (no
#               npm, no network), and mixtures: a fixed list of two-source test mixtures
#   bench       training throughput of the `gpu` config, SGN and U-Net, bf16 autocast
#               (bench/bench_train.py --flops): step time, mixtures/s, peak GPU memory, MFU
#   train       a short `gpu` training of SGN (--steps, validated three times)
#   evaluate    `sgn evaluate` of its best.pt on the test list
#   report      OUT/summary.md: date, commit, GPU (nvidia-smi), torch, and every table
# A failed stage is recorded and the stages that do not need it still run; the script then
# exits 1. Tables and logs go to --out; data and checkpoints to --work.
#
# Usage: bash bench/gpu_check.sh [--out DIR] [--work DIR] [--wheels DIR] [--python PY]
#                                [--peak-tflops N] [--steps N] [--dry-run]
#   --out DIR         tables and logs (default results/gpu_check); must be empty or absent
#   --work DIR        data and checkpoints (default: a temporary folder, removed at the end)
#   --wheels DIR      where setup finds the wheels (default .whl, git-ignored; see Wheels)
#   --python PY       the interpreter (default $PYTHON, else python3)
#   --peak-tflops N   dense bf16 peak of the GPU in TFLOP/s, for MFU (default 989: H200)
#   --steps N         training steps (default 300; with --dry-run 4)
#   --dry-run         the same stages on the CPU at tiny size (`smoke` config, a few steps,
#                     no peak so MFU n/a; the CUDA tests skip): tests the plumbing without
#                     a GPU (tests/test_gpu_check.py). Without it and without CUDA: an error.
#
# Wheels. The GPU machine has no internet; its image has Python 3.12 with torch (CUDA),
# numpy, scipy, pandas, pyyaml, tqdm, pytest and setuptools, but not sgn's audio and metric
# packages. When an import fails, setup installs sgn (editable) and tinysoundfont from
# --wheels with `pip --no-index`. Prepare that folder here, in the repository's root
# (.whl/ is git-ignored), and name it in the device call's carry:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     "soundfile>=0.12,<0.15" cffi pycparser "soxr>=0.3,<2" "mir_eval>=0.7,<0.9" decorator \
#     mido importlib_resources "tinysoundfont>=0.3.7,<0.4"
#   python3 -m pip wheel --no-deps -w .whl "pretty_midi>=0.2.10,<0.3" "fast_bss_eval>=0.1.4,<0.2"
# (the ranges are pyproject.toml's; `pip wheel` builds pretty_midi and fast_bss_eval, pure
# Python, where PyPI has no wheel of them). A missing one makes setup fail naming it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=results/gpu_check WORK="" WHEELS=.whl PY=${PYTHON:-python3} PEAK=989 STEPS="" DRY=0
# seconds per stage; with the checks between stages and 2 s of grace each, under 8 minutes
declare -A LIMIT=([setup]=80 [cuda_tests]=60 [data]=30 [mixtures]=20 [bench]=80 [train]=120 [evaluate]=40
                  [report]=20)
FAILED=()

die() {
  echo "gpu_check: error: $*" >&2
  exit 2
}

parse_flags() {
  while (($#)); do
    case $1 in
      --dry-run) DRY=1; shift; continue ;;
      -h | --help) sed -n '/^# Usage/,/^#$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
      --out | --work | --wheels | --python | --peak-tflops | --steps)
        if (($# < 2)) || [[ -z $2 ]]; then die "$1: needs a value"; fi ;;
      *) die "unknown flag '$1' (see --help)" ;;
    esac
    case $1 in
      --out) OUT=$2 ;;
      --work) WORK=$2 ;;
      --wheels) WHEELS=$2 ;;
      --python) PY=$2 ;;
      --peak-tflops) PEAK=$2 ;;
      --steps) STEPS=$2 ;;
    esac
    shift 2
  done
}

# A folder the run fills: refused when it holds anything, so no earlier run's table is taken for this one's.
check_empty_dir() {
  local flag=$1 dir=$2
  [[ ! -e $dir || -d $dir ]] || die "$flag: '$dir' is not a folder"
  [[ ! -d $dir || -z $(ls -A "$dir") ]] || die "$flag: '$dir' is not empty (remove it or choose another folder)"
}

check_flags() {
  [[ -z $STEPS || $STEPS =~ ^[1-9][0-9]{0,6}$ ]] || die "--steps: expected a positive integer, got '$STEPS'"
  [[ $PEAK =~ ^[0-9]*\.?[0-9]+$ && $PEAK =~ [1-9] ]] || die "--peak-tflops: expected a positive number, got '$PEAK'"
  command -v "$PY" >/dev/null || die "--python: '$PY' not found"
  check_empty_dir --out "$OUT"
  [[ -z $WORK ]] || check_empty_dir --work "$WORK"
}

# stage NAME CMD...: CMD under `timeout`, output to logs/NAME.log, status into stages.tsv; returns CMD's status.
stage() {
  local name=$1 limit=${LIMIT[$1]} start=$SECONDS rc=0 status=ok
  shift
  echo "gpu_check: [$name] running (at most ${limit} s)"
  timeout --kill-after=2 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1 || rc=$?
  if ((rc == 124 || rc == 137)); then
    status="timed out after $limit s"
  elif ((rc != 0)); then
    status="failed (exit $rc)"
  fi
  record "$name" "$status" $((SECONDS - start)) "logs/$name.log"
  ((rc == 0)) || tail -n 5 "$OUT/logs/$name.log" | sed 's/^/    /'
  return "$rc"
}

# record NAME STATUS SECONDS [LOG]: one row of stages.tsv; anything but ok or skipped counts as a failure.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:--}" >>"$OUT/stages.tsv"
  echo "gpu_check: [$1] $2 ($3 s)"
  [[ $2 == ok || $2 == skipped* ]] || FAILED+=("$1")
}

# The imports of every stage, and pretty_midi's SoundFont (sgn itself comes from this tree, on PYTHONPATH).
deps_present() {
  "$PY" -c "import sgn.cli, sgn.train, sgn.evaluate, tinysoundfont, pytest
from sgn.synthmusic import default_soundfont_path; default_soundfont_path()" 2>/dev/null
}

# pip without an index: the device has no internet; without build isolation, so that the
# image's setuptools builds sgn. tinysoundfont without its deps: it declares pyaudio, which
# offline rendering never uses (as in the Makefile).
install_deps() {
  # shellcheck disable=SC2016  # $1 and $2 are the inner shell's arguments
  stage setup bash -c '"$1" -m pip install --no-index --find-links "$2" --no-build-isolation -e . pytest &&
                       "$1" -m pip install --no-index --find-links "$2" --no-deps tinysoundfont' _ "$PY" "$WHEELS"
}

# Sizes: the GPU run's, or the dry run's tiny ones on the CPU.
set_sizes() {
  if ((DRY)); then
    MODE=dry-run CONFIG=smoke DEVICE=cpu STEPS=${STEPS:-4} BENCH_STEPS=1 VAL_MIXTURES=4 TEST_MIXTURES=4 SEGMENT=4096 JOBS=1
    SYNTH=(--classes "cello,flute,trumpet,xylophone" --clips-per-class 8 --seconds 1.5)
    PEAK_FLAG=()
  else
    MODE=gpu CONFIG=gpu DEVICE=cuda STEPS=${STEPS:-300} BENCH_STEPS=10 VAL_MIXTURES=32 TEST_MIXTURES=64 SEGMENT=65535
    JOBS=$(nproc)
    SYNTH=(--clips-per-class 48 --seconds 6)
    PEAK_FLAG=(--peak-tflops "$PEAK")
  fi
}

run_stages() {
  local index="$WORK/synth/index.csv" list="$WORK/test_seen_2src.csv" run="$WORK/runs/sgn" soundfont s
  local -a cuda_files
  mapfile -t cuda_files < <(grep -l "cuda.is_available" tests/test_*.py)
  stage cuda_tests "$PY" -m pytest -q -k cuda -p no:cacheprovider --junitxml "$OUT/cuda_tests.xml" \
    "${cuda_files[@]}" || true
  soundfont=$("$PY" -c "from sgn.synthmusic import default_soundfont_path as p; print(p())" 2>/dev/null || true)
  stage data "$PY" -m sgn data synth --out "$WORK/synth" --soundfont "$soundfont" --held-out-bank none \
    --ensembles 0 --jobs "$JOBS" "${SYNTH[@]}" || true
  if [[ -f $index ]]; then
    stage mixtures "$PY" -m sgn data mixtures --index "$index" --split test_seen --n-sources 2 \
      --count "$TEST_MIXTURES" --segment-samples "$SEGMENT" --seed 0 --out "$list" || true
    stage bench "$PY" bench/bench_train.py --config "$CONFIG" --arch sgn unet --index "$index" \
      --steps "$BENCH_STEPS" --device "$DEVICE" --flops "${PEAK_FLAG[@]}" --csv "$OUT/bench_train.csv" || true
    stage train "$PY" -m sgn train --config "$CONFIG" --device "$DEVICE" --out "$run" --set "data.index=$index" \
      --set "optim.max_steps=$STEPS" --set "optim.warmup_steps=$((STEPS / 10))" \
      --set "eval_every=$(((STEPS + 2) / 3))" --set "data.val_mixtures=$VAL_MIXTURES" || true
    mkdir -p "$OUT/train"
    cp "$run"/{config.yaml,metrics.csv} "$OUT/train/" 2>/dev/null || true
  else
    for s in mixtures bench train; do record "$s" "skipped (no data)" 0; done
  fi
  # a run stopped by its time limit after a validation still has a best.pt to score
  if [[ -f $run/best.pt && -f $list ]]; then
    stage evaluate "$PY" -m sgn evaluate --checkpoint "$run/best.pt" --mixtures "$list" --device "$DEVICE" \
      --batch-size 16 --out "$OUT/evaluate.csv" || true
  else
    record evaluate "skipped (no checkpoint or no test list)" 0
  fi
}

main() {
  parse_flags "$@"
  check_flags
  if ((!DRY)) && ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    die "no CUDA GPU visible to torch in $PY; run with --dry-run to test the stages on the CPU"
  fi
  set_sizes
  OUT=$(realpath -m "$OUT") WHEELS=$(realpath -m "$WHEELS")
  [[ -z $WORK ]] || WORK=$(realpath -m "$WORK")
  cd "$ROOT"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  local need_setup=0
  if ! deps_present; then
    [[ -d $WHEELS ]] || die "--wheels: '$WHEELS' is not a folder, and sgn's dependencies are missing (see the header of $0)"
    need_setup=1
  fi
  if [[ -z $WORK ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sgn_gpu_check.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
  fi
  mkdir -p "$OUT/logs" "$WORK"
  printf 'stage\tstatus\tseconds\tlog\n' >"$OUT/stages.tsv"
  local budget=0 s
  for s in "${LIMIT[@]}"; do budget=$((budget + s)); done
  echo "gpu_check: $MODE, config $CONFIG; the stages' limits add up to $budget s; tables and logs into $OUT"
  if ((need_setup)); then
    install_deps || { echo "gpu_check: setup failed, so every stage would: see $OUT/logs/setup.log" >&2; exit 1; }
  else
    record setup "skipped (dependencies present)" 0
  fi
  run_stages
  stage report "$PY" bench/gpu_check_report.py --out "$OUT" --mode "$MODE" \
    --config "$CONFIG" "${PEAK_FLAG[@]}" || true
  [[ ! -f $OUT/summary.md ]] || echo "gpu_check: summary in $OUT/summary.md (tables and logs in $OUT)"
  if ((${#FAILED[@]})); then
    echo "gpu_check: failed stages: ${FAILED[*]}" >&2
    exit 1
  fi
}

main "$@"
