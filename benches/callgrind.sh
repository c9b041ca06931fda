#!/usr/bin/env bash
# Instructions per call of bench stacks under callgrind: the median of
# several samples of each.
#
#   benches/callgrind.sh BINARY VARIABLE STACK...
#
# BINARY is a bench binary built by `cargo bench --bench NAME --no-run`;
# VARIABLE its count-mode variable (`E2E_BENCH_COUNT`, `RETRY_BENCH_COUNT`,
# `PEERS_BENCH_COUNT`). Each stack runs at LOW and HIGH calls (default 200
# and 1200); (count at HIGH - count at LOW) / (HIGH - LOW) is one sample,
# and REPEATS (default 5, an odd number) samples are taken, one after
# another.
#
# Why a median: against loopback servers the count depends on timing. When
# the server has not answered by the time the client polls, the client's
# runtime parks and wakes once more, about a thousand instructions; on a
# busy machine that happens often enough to add 400 (hyper-util, 1.4% of a
# call) to a sample. Run this alone on an idle machine; samples then agree
# to within 20 instructions but for an odd one, which the median leaves out.
#
# Between two builds, a bare client's count moves too (by up to 700 for
# hyper-util) although its code did not change: the generic code of hyper
# and tokio that each bench binary instantiates is split into codegen units
# and inlined differently whenever the crate's code changes. Compare stacks
# of one build, or build both sides with CARGO_PROFILE_BENCH_CODEGEN_UNITS=1
# (a bare hyper-util call then moved by 25).
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 BINARY VARIABLE STACK..." >&2
  exit 2
fi
binary=$1
variable=$2
shift 2
low=${LOW:-200}
high=${HIGH:-1200}
repeats=${REPEATS:-5}

number='^[0-9]+$'
if ! [[ $low =~ $number && $high =~ $number && $repeats =~ $number ]] ||
  [ "$high" -le "$low" ] || [ $((repeats % 2)) -ne 1 ]; then
  echo "$0: LOW < HIGH, and an odd REPEATS, as whole numbers" >&2
  exit 2
fi

instructions() { # stack calls
  local output count
  if ! output=$(env "$variable=$1:$2" \
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$binary" 2>&1); then
    echo "$0: $variable=$1:$2 failed:" >&2
    echo "$output" | grep -v '^==' >&2
    exit 1
  fi
  count=$(echo "$output" | awk '/Collected/ { gsub(",", "", $4); print $4 }')
  if ! [[ $count =~ $number ]]; then
    echo "$0: no instruction count for $variable=$1:$2" >&2
    exit 1
  fi
  echo "$count"
}

for stack in "$@"; do
  samples=()
  for _ in $(seq "$repeats"); do
    a=$(instructions "$stack" "$low")
    b=$(instructions "$stack" "$high")
    samples+=($(((b - a) / (high - low))))
  done
  mapfile -t sorted < <(printf '%s\n' "${samples[@]}" | sort -n)
  n=${#sorted[@]}
  echo "$stack median ${sorted[$((n / 2))]} min ${sorted[0]} max ${sorted[$((n - 1))]} (${samples[*]})"
done
