#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (the input parsers: PTX, .npy, IR text,
# offsets binding, --arg specs), each for a number of executions and/or a time,
# on a temporary copy of its checked-in seed corpus (fuzz/corpus/TARGET/ does
# not grow), then prints executions per target. Fails on any finding: a panic,
# an abort, a hang (one input over FUZZ_TIMEOUT seconds) or an OOM (over
# FUZZ_RSS_MB); the input is kept in fuzz/artifacts/TARGET/ and its panic is
# printed.
#
#   scripts/fuzz-long.sh [--runs N] [--seconds S] [TARGET...]
#
#   --runs N       executions per target (default 1000000; 0: no limit)
#   --seconds S    time per target (default 0: no limit; with --runs, whichever
#                  comes first)
#   TARGET...      some of: ptx_parse npy_read graph_parse bind_offsets argspec
#                  (default: all)
#
# Environment: FUZZ_RUNS / FUZZ_SECONDS (defaults of the options), FUZZ_TIMEOUT
# (10), FUZZ_RSS_MB (2048), FUZZ_SANITIZER (none: the fuzzed crates have no
# unsafe code, and AddressSanitizer would halve the executions; `address` to
# turn it on). Installs cargo-fuzz into .tools/ when it is missing; needs the
# nightly toolchain (installed with rustup when missing). scripts/fuzz-smoke.sh is this with --seconds 30.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(ptx_parse npy_read graph_parse bind_offsets argspec)
runs="${FUZZ_RUNS:-1000000}"
seconds="${FUZZ_SECONDS:-0}"
timeout="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"
sanitizer="${FUZZ_SANITIZER:-none}"
label="${FUZZ_LABEL:-fuzz}"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "$label: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "$label: no target '$t' (${ALL_TARGETS[*]})" >&2; exit 2; }
done
if [ "$runs" = 0 ] && [ "$seconds" = 0 ]; then
  echo "$label: give --runs or --seconds a limit" >&2
  exit 2
fi

# The tools: nightly (cargo-fuzz builds with -Z flags) and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "$label: installing the nightly toolchain (rustup)"
  rustup toolchain install nightly --profile minimal
fi
if [ ! -x .tools/bin/cargo-fuzz ] || ! .tools/bin/cargo-fuzz --version | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "$label: installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/"
  cargo install --locked --root .tools --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
export PATH="$root/.tools/bin:$PATH"

start=$(date +%s)
echo "$label: building the targets (sanitizer: $sanitizer; fuzz/target caches the build)"
cargo +nightly fuzz build --fuzz-dir fuzz -s "$sanitizer"
built=$(date +%s)
host="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin_dir="fuzz/target/$host/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/jagged-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

limits=()
[ "$runs" != 0 ] && limits+=("-runs=$runs")
[ "$seconds" != 0 ] && limits+=("-max_total_time=$seconds")
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
  cp fuzz/corpus/"$t"/* "$work/corpus/$t/"
  seeds=$(find "fuzz/corpus/$t" -type f | wc -l)
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=("-dict=fuzz/dicts/$t.dict")
  echo "$label: $t (${limits[*]}, $seeds seeds)"
  log="$work/$t.log"
  t0=$(date +%s)
  rc=0
  "$bin_dir/$t" "$work/corpus/$t" "${limits[@]}" "${dict[@]}" \
    -timeout="$timeout" -rss_limit_mb="$rss_mb" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
  t1=$(date +%s)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  new=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  corpus=$(find "$work/corpus/$t" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    status=ok
  else
    status="FINDING (exit $rc)"
    failed+=("$t")
    cp "$log" "fuzz/artifacts/$t/finding.log"
    echo "$label: $t: finding (whole log: fuzz/artifacts/$t/finding.log):" >&2
    # The panic and its message, libFuzzer's verdict, and the input (base64).
    grep -m 1 -A 3 -E "panicked at|ERROR: libFuzzer|==ERROR" "$log" >&2 || tail -n 20 "$log" >&2
    grep -E "^SUMMARY|Test unit written|^Base64:" "$log" >&2 || true
    if ! grep -q "Test unit written" "$log"; then
      # libFuzzer wrote no input: without a sanitizer, a stack overflow kills
      # it before its handler can (exit 139, SIGSEGV).
      echo "$label: $t: no input saved; a stack overflow is likely: rerun with FUZZ_SANITIZER=address" >&2
    fi
  fi
  summary+=("$(printf '%-13s %12s %9s %6s %8s %9s %9s %5ss  %s' \
    "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${new:-?}" "$corpus" "${rss:-?}MB" "$((t1 - t0))" "$status")")
done
end=$(date +%s)

echo
echo "$label: summary (build $((built - start))s, total $((end - start))s)"
printf '%-13s %12s %9s %6s %8s %9s %9s %6s  %s\n' \
  target executions exec/s cov new corpus peak_rss time status
for line in "${summary[@]}"; do echo "$line"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "$label: findings in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
