#!/usr/bin/env bash
# Alternates the same benchmark case built from two commits, ROUNDS times, and prints each
# round's ratio (before / after: above 1 means the later commit is faster). On a machine
# whose speed drifts within minutes, rounds taken side by side compare better than one run
# of each.
#
#   benches/before_after.sh BEFORE_BIN AFTER_BIN CRATE FILTER [ROUNDS]
#
# Build both first, sharing one target folder so that Burn is compiled once:
#   git worktree add /tmp/kiln-before OLD_COMMIT
#   (cd /tmp/kiln-before && CARGO_TARGET_DIR=$PWD/../main/target cargo bench -p kiln-nlp --no-run)
#   cargo bench -p kiln-nlp --no-run
# and pass the two bench binaries (`target/release/deps/lstm-*`, newest of each build).
# KILN_BENCH_SECS (default 2) sets each side's time budget per round; KILN_BA_BACKEND (an
# extended regex, default `(kiln )?flex`) picks the row by its backend column, e.g.
# `kiln gguf` for the decoder benchmark's GGUF cases (which also need KILN_MODELS).
set -euo pipefail
before=$1 after=$2 crate=$3 filter=$4 rounds=${5:-6}
root=$(cd "$(dirname "$0")/.." && pwd)
export KILN_BENCH_SECS=${KILN_BENCH_SECS:-2} KILN_BENCH_BACKENDS=${KILN_BENCH_BACKENDS:-flex}
backend=${KILN_BA_BACKEND:-'(kiln )?flex \|'}
median() {
  (cd "$root/crates/$crate" && "$1" --bench "$filter" | grep -E "\| $backend" | head -1 | awk -F'|' '{print $4}')
}
for _ in $(seq 1 "$rounds"); do
  b=$(median "$before")
  a=$(median "$after")
  python3 -c "print(f'before {float($b):.3f} ms  after {float($a):.3f} ms  ratio {float($b)/float($a):.3f}')"
done
