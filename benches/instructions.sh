#!/usr/bin/env bash
# Instructions per request on the layer's hot paths, counted by callgrind (valgrind).
# `bash benches/instructions.sh` builds benches/instructions.rs with rustix's libc backend
# (valgrind cannot run rustix's own vDSO lookup) in target/instructions, runs each mode
# for N and 2N requests, and prints the difference divided by N: setup cancels out.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
n=${1:-100000}
export CARGO_TARGET_DIR=target/instructions
# Quiet, but a failed build says why (the script stops on it).
# Each mode is built alone (see benches/instructions.rs for why). `cargo rustc` gives the
# cfgs to the bench only, so the crate and its dependencies are built once; it does not
# rebuild for new cfgs by itself, hence the touch.
build() {
  touch benches/instructions.rs
  RUSTFLAGS="--cfg rustix_use_libc" cargo rustc -q --profile bench --bench instructions \
    -- --cfg instructions_mode --cfg "instructions_mode=\"$1\""
  ls -t target/instructions/release/deps/instructions-* | grep -v '\.d$' | head -1
}
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" "$3" 2>&1 \
    | awk '/Collected/ { print $4 }'
}
for mode in head body gate; do
  bin=$(build "$mode")
  one=$(count "$bin" "$mode" "$n")
  two=$(count "$bin" "$mode" $((2 * n)))
  echo "$mode: $(( (two - one) / n )) instructions per request"
done
