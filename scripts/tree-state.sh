#!/usr/bin/env bash
# Prints every path in the checkout that git does not track, ignored ones included, except the
# build output (target/). scripts/test.sh runs it before and after the suite: a test that leaves a
# file in the tree (tests write under temp dirs only; pyca.db was once committed by accident) makes
# the suite fail, naming the file. Outside a git checkout it prints nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 0
git status --porcelain --ignored --untracked-files=all | grep -v -E '^(!!|\?\?) "?target/' | sort || true
