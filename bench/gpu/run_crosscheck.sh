#!/usr/bin/env bash
# Cross-checks the PTX fixtures on the GPU against the emulator: every Triton
# fixture of emulator/fixtures/ (NAME.ptx + NAME.json) and the runtime's own
# test kernel runtime/tests/data/vadd.ptx, each with a recipe below (grid,
# argument specs, tolerance). Needs no Rust: it runs a prebuilt jagc
# (`jagc crosscheck`).
#
# usage: bench/gpu/run_crosscheck.sh [--dry-run] [NAME...]
#   --dry-run   emulator only (JAGGED_CROSSCHECK_DRY_RUN=1 does the same): for
#               machines without a GPU; checks that every recipe runs.
#   NAME...     only these fixtures (default: all).
# env:
#   JAGGED_CROSSCHECK_BIN  the jagc binary (default: bench/gpu/bin/jagc,
#                          else target*/release/jagc)
#   JAGGED_CROSSCHECK_REPEAT  timed GPU launches per kernel (default 20)
#   JAGGED_CROSSCHECK_BACKENDS  override the backends (e.g. `cuda` alone)
#   JAGGED_CROSSCHECK_SAVE_DIR  save the first backend's buffers as DIR/NAME/argN.npy
#   JAGGED_CROSSCHECK_EXPECT_DIR  compare with buffers saved there instead
#                          (e.g. GPU results brought back to a machine without one)
# Exit status: 0 when every fixture with a recipe passes (a fixture without
# one is reported as SKIP), 1 otherwise.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fixtures="$root/emulator/fixtures"

dry_run="${JAGGED_CROSSCHECK_DRY_RUN:-0}"
names=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) names+=("$arg") ;;
  esac
done

bin="${JAGGED_CROSSCHECK_BIN:-}"
if [ -z "$bin" ]; then
  for candidate in "$here/bin/jagc" "$root"/target*/release/jagc; do
    if [ -x "$candidate" ]; then bin="$candidate"; break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "run_crosscheck: no jagc binary: set JAGGED_CROSSCHECK_BIN or build it with" >&2
  echo "  cargo build --release --bin jagc && mkdir -p bench/gpu/bin && cp \$CARGO_TARGET_DIR/release/jagc bench/gpu/bin/" >&2
  exit 1
fi

# desc BUF DTYPE ROWS COLS BLOCK_ROWS BLOCK_COLS: the PTX arguments of a Triton
# host-side tensor descriptor (TensorDescriptor) over the row-major [ROWS, COLS]
# tensor of argument BUF, as Triton's launcher (make_tensordesc_arg ->
# fill_tma_descriptor_tiled -> cuTensorMapEncodeTiled) passes them: the 128-byte
# map (dims and box innermost first, byte stride of the rows, 128-byte swizzle,
# the box the fixture's JSON `tensor_maps` gives), then the shape (2 x i32) and
# the strides in elements (2 x i64).
desc() {
  local size
  case "$2" in f16|bf16) size=2 ;; f32) size=4 ;; *) size=0 ;; esac
  echo "tmap:$1:$2:$4x$3:$(($4 * size)):$6x$5:swizzle=128 i32:$3 i32:$4 i64:$4 i64:1"
}

# recipe NAME: prints "GRID|TOLERANCE|ARG SPECS" (block and shared memory
# come from the fixture's JSON).
recipe() {
  case "$1" in
    # Triton 3.9's Hopper kernels (gen_hopper.py): host: buffers are the tensors of the
    # descriptors (no kernel parameter of their own), counted in the tmap: numbers.
    # Tutorial 09 TMA matmul, 128x128x64 tiles: A [200,200], B [136,200] f16, C [200,136] f32;
    # 2 x 2 tiles, K ends in a partial box.
    hopper_matmul_tma) echo "4|1e-4|host:rand:f16:40000:31 host:rand:f16:27200:32 host:poison:f32:27200 \
$(desc 1 f16 200 200 128 64) $(desc 2 f16 136 200 128 64) $(desc 3 f32 200 136 128 32) u32:200 u32:136 u32:200 null null" ;;
    # Tutorial 09 persistent matmul, 128x64x64 tiles, NUM_SMS = 4 programs over 3 x 4 tiles:
    # A [328,136], B [200,136], C [328,200] f16 (f16 output).
    hopper_matmul_persistent) echo "4|2e-3|host:rand:f16:44608:33 host:rand:f16:27200:34 host:poison:f16:65600 \
$(desc 1 f16 328 136 128 64) $(desc 2 f16 200 136 64 64) $(desc 3 f16 328 200 128 64) u32:328 u32:200 u32:136 null null" ;;
    # Tutorial 06 attention forward, f16, BLOCK_M 128, BLOCK_N 64: q, k, v, o [Z*H*N_CTX, D];
    # sm_scale 0.5, M (logsumexp) [Z*H*N_CTX] f32. D = 64: Z = 1, H = 2, N_CTX = 256.
    hopper_attention_d64|hopper_attention_d64_causal)
      local z=1 h=2
      [ "$1" = hopper_attention_d64_causal ] && z=2 h=1
      echo "2,2|2e-3|host:rand:f16:32768:41 host:rand:f16:32768:42 host:rand:f16:32768:43 host:poison:f16:32768 \
f32:0.5 poison:f32:512 u32:$z u32:$h $(desc 1 f16 512 64 128 64) $(desc 2 f16 512 64 64 64) \
$(desc 3 f16 512 64 64 64) $(desc 4 f16 512 64 128 64) u32:256 null null" ;;
    # D = 128 (Triton splits each 256-byte row into two 64-column boxes): Z = 1, H = 2, N_CTX = 128.
    hopper_attention_d128) echo "1,2|2e-3|host:rand:f16:32768:44 host:rand:f16:32768:45 host:rand:f16:32768:46 host:poison:f16:32768 \
f32:0.5 poison:f32:256 u32:1 u32:2 $(desc 1 f16 256 128 128 64) $(desc 2 f16 256 128 64 64) \
$(desc 3 f16 256 128 64 64) $(desc 4 f16 256 128 128 64) u32:128 null null" ;;
    # x: 5000 f32 (5 blocks of 1024, the last partial); out[0] accumulated by atomics.
    sum_atomic) echo "5|1e-4|rand:f32:5000:11 zeros:f32:1 u32:5000 null null" ;;
    # 64 rows of 200 valid columns, row stride 256; y zeroed (masked columns stay 0).
    softmax_rows) echo "64|1e-5|rand:f32:16384:12 zeros:f32:16384 u32:200 u32:256 u32:256 null null" ;;
    # M=100 (partial tile), N=128, K=96 (partial k-step): A [100,96], B [96,128], C [100,128].
    matmul_bf16) echo "2,2|1e-4|rand:bf16:9600:13 rand:bf16:12288:14 zeros:f32:12800 u32:100 u32:128 u32:96 u32:96 u32:128 u32:128 null null" ;;
    # 128 queries (2 blocks of 64) over n_ctx = 128 keys, D = 64, scale 1/8.
    attention_fwd) echo "2|1e-3|rand:bf16:8192:15 rand:bf16:8192:16 rand:bf16:8192:17 zeros:f32:8192 u32:128 f32:0.125 u32:64 u32:64 u32:64 u32:64 null null" ;;
    # M=100 (partial tile), N=128, K=64 (the kernel masks only M): A [100,64], B [64,128], C [100,128].
    matmul_tf32) echo "2,2|1e-4|rand:f32:6400:18 rand:f32:8192:19 zeros:f32:12800 u32:100 u32:128 u32:64 u32:64 u32:128 u32:128 null null" ;;
    # 32 rows of 500 f16 values (BLOCK 512), w, b of 500; eps 1e-5. f16 output: f16 tolerance.
    layernorm_f16) echo "32|2e-3|rand:f16:16000:20 rand:f16:500:21 rand:f16:500:22 zeros:f16:16000 u32:500 f32:1e-5 null null" ;;
    # One 128x128 program, K=64: A [128,64], B [64,128], C [128,128] f16 (48 KiB shared). f16 output.
    matmul_f16_wide) echo "1|2e-3|rand:f16:8192:27 rand:f16:8192:28 zeros:f16:16384 u32:64 null null" ;;
    # One program: inclusive prefix sum of 1000 i32 in [0, 100) (bit exact).
    cumsum_i32) echo "1|0|rand:i32:1000:23 zeros:i32:1000 u32:1000 null null" ;;
    # 5000 values in [0, 100) into 100 bins, 10 blocks of 512 (bit exact).
    histogram_atomic) echo "10|0|rand:i32:5000:24 zeros:i32:100 u32:5000 null null" ;;
    # Triton 3.6's sm_90a wgmma matmuls (gen_triton.py): one BLOCK_M x BLOCK_N tile of C (f32),
    # K = 256: A [m, K], B [K, n] (or [n, K] for _nk), C poisoned (every element is written).
    wgmma_matmul_bf16) echo "1|1e-4|rand:bf16:16384:51 rand:bf16:16384:52 poison:f32:4096 u32:256 null null" ;;
    wgmma_matmul_f16_nk) echo "1|1e-4|rand:f16:16384:53 rand:f16:32768:54 poison:f32:8192 u32:256 null null" ;;
    wgmma_matmul_f16_wide) echo "1|1e-4|rand:f16:32768:55 rand:f16:65536:56 poison:f32:32768 u32:256 null null" ;;
    # B=8 sequences over T=300 rows of D=64 (random offsets, some empty), max_len 64 cuts the long ones.
    jagged_sum) echo "8|1e-5|rand:f32:19200:25 offsets:i32:8:300:26 zeros:f32:512 u32:64 null null" ;;
    *) return 1 ;;
  esac
}

# json_field FILE KEY: the scalar value of "KEY": VALUE in a pretty-printed JSON file.
json_field() {
  sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1" | head -n 1
}

# Every fixture, in a fixed order: the runtime's vadd, then the Triton ones
# with launch metadata (a .ptx without a .json, such as the TMA kernels that
# only emulator/tests/tma.rs launches, has no launch to cross-check).
all=(vadd)
for ptx in "$fixtures"/*.ptx; do
  [ -e "${ptx%.ptx}.json" ] && all+=("$(basename "$ptx" .ptx)")
done
[ ${#names[@]} -eq 0 ] && names=("${all[@]}")

if [ "$dry_run" = 1 ]; then backends=emu; else backends=cuda,emu; fi
backends="${JAGGED_CROSSCHECK_BACKENDS:-$backends}"
repeat="${JAGGED_CROSSCHECK_REPEAT:-20}"
echo "run_crosscheck: backends $backends, binary $bin"
failed=0
summary=()
for name in "${names[@]}"; do
  if [ "$name" = vadd ]; then
    ptx="$root/runtime/tests/data/vadd.ptx"
    kernel=vadd block=128 shared=0 grid=8 tol=0
    specs="rand:f32:1000:1 rand:f32:1000:2 poison:f32:1000 u32:1000"
  else
    ptx="$fixtures/$name.ptx"
    meta="$fixtures/$name.json"
    if [ ! -f "$ptx" ] || [ ! -f "$meta" ]; then
      echo "== $name: no $name.ptx / $name.json in $fixtures"; failed=1; summary+=("$name MISSING"); continue
    fi
    if ! line="$(recipe "$name")"; then
      echo "== $name: SKIP: no recipe in $0 (add one)"; summary+=("$name SKIP(no recipe)"); continue
    fi
    IFS='|' read -r grid tol specs <<<"$line"
    kernel="$(json_field "$meta" kernel)"
    block=$((32 * $(json_field "$meta" num_warps)))
    shared="$(json_field "$meta" shared_bytes)"
  fi
  echo "== $name"
  dirs=()
  [ -n "${JAGGED_CROSSCHECK_SAVE_DIR:-}" ] && dirs+=(--save-dir "$JAGGED_CROSSCHECK_SAVE_DIR/$name")
  [ -n "${JAGGED_CROSSCHECK_EXPECT_DIR:-}" ] && dirs+=(--expect-dir "$JAGGED_CROSSCHECK_EXPECT_DIR/$name")
  # shellcheck disable=SC2086 # the specs are words
  output="$("$bin" crosscheck --backends "$backends" --grid "$grid" --block "$block" --shared "$shared" \
    --tol "$tol" --repeat "$repeat" "${dirs[@]}" "$ptx" "$kernel" $specs 2>&1)"
  status=$?
  echo "$output"
  times="$(echo "$output" | sed -n 's/^\(cuda\|emu\) *on .*: best \([0-9.]*\) ms.*/\1 \2 ms/p' | tr '\n' ' ')"
  if [ $status -eq 0 ]; then
    summary+=("$name PASS $times")
  else
    failed=1
    summary+=("$name FAIL(exit $status) $times")
  fi
done
echo "== summary ($backends)"
printf '%s\n' "${summary[@]}"
exit $failed
