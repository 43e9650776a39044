#!/bin/bash
# Same-run before/after: another commit (BASE, a git revision) and this tree, each built in
# release in one target dir, run back to back (this tree, the base, this tree again):
# criterion's layer and engine benches, then sign-ins over HTTP (`BENCH_QUICK=1`).
# Usage: bench/compare.sh BASE   Output: target/bench-compare/{new,base,new2}-*.txt
set -eu
base_rev=${1:?usage: bench/compare.sh BASE}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/bench-compare
worktree=$root/target/bench-base
mkdir -p "$out"
[ -d "$worktree" ] || git -C "$root" worktree add -q "$worktree" "$base_rev"
git -C "$worktree" checkout -q "$base_rev"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/bench-shared}
crit="--warm-up-time 2 --measurement-time 6 --noplot"
run_tree() { # name dir
  cd "$2"
  cargo build --release --benches --bins -q
  cargo bench -q --bench layer -- $crit > "$out/$1-layer.txt" 2>&1
  cargo bench -q --bench engine -- $crit > "$out/$1-engine.txt" 2>&1
  BENCH_QUICK=1 cargo bench -q --bench http -- --bench > "$out/$1-http.txt" 2>&1
}
run_tree new "$root"
run_tree base "$worktree"
run_tree new2 "$root"
grep -h "time:" "$out"/*-layer.txt "$out"/*-engine.txt | head -40
grep -h "^|" "$out"/*-http.txt
