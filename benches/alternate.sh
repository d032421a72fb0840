#!/usr/bin/env bash
# Alternates a Rust benchmark case and its Python peer, ROUNDS times, and prints the ratio
# (peer median / Kiln median) of each round: on a machine whose speed drifts within minutes,
# rounds taken side by side compare better than one run of each.
#
#   benches/alternate.sh CRATE BENCH FILTER PEER [ROUNDS]
#   benches/alternate.sh nlp lstm lstm_train_step_h256 benches/peers/lstm_torch.py 6
#
# Build the benchmarks first (`cargo bench --workspace --features ndarray --no-run`).
# KILN_BENCH_SECS (default 2) sets each side's time budget. KILN_ALT_BACKEND (default `flex`)
# picks the Kiln row by its backend column, e.g. `kiln f32` for the decoder benchmark; the
# peer's JSON line is the one whose name contains FILTER.
set -euo pipefail
crate=$1 bench=$2 filter=$3 peer=$4 rounds=${5:-6}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(ls -t "$root"/target/release/deps/"$bench"-* | grep -v '\.d$' | head -1)
export KILN_BENCH_SECS=${KILN_BENCH_SECS:-2} KILN_BENCH_BACKENDS=${KILN_BENCH_BACKENDS:-flex}
for _ in $(seq 1 "$rounds"); do
  kiln=$(cd "$root/crates/$crate" && "$bin" --bench "$filter" | grep "| ${KILN_ALT_BACKEND:-flex} |" | grep "$filter" | head -1 | awk -F'|' '{print $4}')
  theirs=$(python3 "$root/$peer" | python3 -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
print([r for r in rows if '$filter' in r['name']][0]['median_secs'] * 1e3)")
  python3 -c "print(f'kiln {float($kiln):.2f} ms  peer {$theirs:.2f} ms  ratio {$theirs/float($kiln):.3f}')"
done
