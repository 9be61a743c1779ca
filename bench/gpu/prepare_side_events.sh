#!/usr/bin/env bash
# Builds what quantize_bench.py and event_bench.py launch on the GPU (needs
# Rust; the GPU machine has none): the release jagc, the side-graphs helper
# (bench/gpu/side_graphs: the .jir text of every graph launched), and for
# each graph `jagc emit --graph FILE.jir --plan --arch ARCH` into
# bench/gpu/side_events_prebuilt/NAME.ptx next to NAME.jir (ignored by git;
# the GPU run carries the folder). Graphs jagc also knows by a builtin name
# are emitted that way too and must give the same PTX (a stale build fails).
#
# usage: bench/gpu/prepare_side_events.sh [OUT_DIR]   (default bench/gpu/side_events_prebuilt)
# env:   ARCH (default sm_90a, the H100's), CARGO_TARGET_DIR (default target)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/side_events_prebuilt}"
arch="${ARCH:-sm_90a}"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

cd "$root"
cargo build --release --offline --bin jagc
(cd "$here/side_graphs" && cp "$root/Cargo.lock" Cargo.lock &&
  CARGO_TARGET_DIR="$target" cargo build --release --offline)
jagc="$target/release/jagc"
rm -rf "$out" && mkdir -p "$out"

# The specializations (bench/gpu/side_graphs/src/main.rs reads these):
# quantize_bench.py: K = 256, D = 128, 4 levels, beam 4; PQ M = 8 and 16 of D = 128.
# event_bench.py: D = 64 f32 features, a [4, 8] boost table.
"$target/release/side-graphs" "$out" \
  rq_level:256:128:4 rq_beam:256:128:4:4 pq:8:256:16 pq:16:256:8 \
  session_segment event_prune_topk event_prune_topk_features:64 complete_cumsum masked_select:f32:64 masked_select:i32:0 \
  event_boost:64:4:8 session_pool_sum:64 >/dev/null

for jir in "$out"/*.jir; do
  "$jagc" emit --graph "$jir" --arch "$arch" --plan >"${jir%.jir}.ptx"
done

# The builtin names give the same PTX (the graphs are the ones jagc builds).
same() { # FILE_STEM OP ARGS...: the PTX (plan comments left out) must be equal
  local stem="$1"; shift
  if ! diff -q <("$jagc" emit "$@" --arch "$arch" | grep -v '^//') \
      <(grep -v '^//' "$out/$stem.ptx") >/dev/null; then
    echo "prepare_side_events: $stem differs from \`jagc emit $*\` (stale build?)" >&2; exit 1
  fi
}
same rq_level_k256_d128_l4 residual_quantize --attr inner=4x256x128
same pq_m8_k256_s16 product_quantize --attr inner=8x256x16
same pq_m16_k256_s8 product_quantize --attr inner=16x256x8
same event_boost_d64_g4_c8 event_boost --attr inner=64x4x8
same session_pool_sum_d64 session_pool --attr inner=64
same masked_select_f32_d64 masked_select_jagged --attr inner=64
same complete_cumsum complete_cumsum

{
  echo "commit $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- src ir codegen macros runtime || echo ' + uncommitted changes')"
  echo "jagc $("$jagc" --version) arch $arch"
  date -u +"built %Y-%m-%dT%H:%M:%SZ"
} >"$out/BUILD.txt"
echo "prepare_side_events: $(ls "$out"/*.ptx | wc -l) plans in $out ($arch)"
cat "$out/BUILD.txt"
