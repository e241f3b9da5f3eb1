#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the hil-tests scenarios on the simulated board.
# Usage: scripts/test.sh   (as root on Debian 12, or with sudo available for apt)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins --locked
before=$(bash scripts/tree-state.sh)
# Two test threads: the hil scenarios each run a real 720p/320p encoder on a 2-core machine.
cargo test --workspace --locked -- --test-threads=2
# The suite leaves the tree as it found it: test artefacts belong in temp dirs.
left=$(comm -13 <(echo "$before") <(bash scripts/tree-state.sh))
if [ -n "$left" ]; then
  echo "test.sh: the suite left these in the tree (tests must write under temp dirs):" >&2
  echo "$left" >&2
  exit 1
fi
echo "test.sh: the tree is as the suite found it"
