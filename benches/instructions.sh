#!/usr/bin/env bash
# Instructions per request on the layer's hot paths, counted by callgrind (valgrind).
# `bash benches/instructions.sh` builds benches/instructions.rs with rustix's libc backend
# (valgrind cannot run rustix's own vDSO lookup) in target/instructions, runs each mode
# for N and 2N requests, and prints the difference divided by N: setup cancels out.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
n=${1:-100000}
export CARGO_TARGET_DIR=target/instructions
# Quiet, but a failed build says why (the script stops on it).
RUSTFLAGS="--cfg rustix_use_libc" cargo bench --bench instructions --no-run -q
bin=$(ls -t target/instructions/release/deps/instructions-* | grep -v '\.d$' | head -1)
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
    | awk '/Collected/ { print $4 }'
}
for mode in head body gate; do
  one=$(count "$mode" "$n")
  two=$(count "$mode" $((2 * n)))
  echo "$mode: $(( (two - one) / n )) instructions per request"
done
