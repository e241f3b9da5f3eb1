#!/usr/bin/env bash
# The main job: builds lecternd and runs it on the simulated board with a bundled config and a
# schedule generated for "now": a short scheduled lecture, then a button-started recording.
# Prints where the files are and exits by itself in about a minute (plus the first build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins --locked
BIN=target/release

OUT="${DEMO_DIR:-$PWD/demo-out}"
rm -rf "$OUT"; mkdir -p "$OUT/media"
cp demo/lectern.toml "$OUT/lectern.toml"
start=$(date -u -d '+4 seconds' +%Y%m%dT%H%M%SZ)
end=$(date -u -d '+24 seconds' +%Y%m%dT%H%M%SZ)
sed -e "s/@START@/$start/" -e "s/@END@/$end/" demo/schedule.ics.in > "$OUT/schedule.ics"
export LECTERN_CONFIG="$OUT/lectern.toml"
lectern() { "$BIN/lectern" "$@"; }

echo "demo: starting lecternd (sim board) — log in $OUT/lecternd.log"
"$BIN/lecternd" --config "$OUT/lectern.toml" 2> "$OUT/lecternd.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do lectern status >/dev/null 2>&1 && break; sleep 0.1; done
lectern status

wait_state() { # state, timeout seconds
  for _ in $(seq $(( $2 * 10 ))); do
    lectern --json status | grep -q "\"state\": \"$1\"" && return 0; sleep 0.1
  done
  echo "demo: timed out waiting for state $1" >&2; tail -20 "$OUT/lecternd.log" >&2; return 1
}
echo; echo "demo: a scheduled 20 s lecture starts in a few seconds..."
wait_state recording 15; lectern status
wait_state idle 40
echo; echo "demo: pressing the front-panel button (ad-hoc recording)"
lectern sim button press; wait_state recording 10; lectern sim led
sleep 10
echo "demo: pressing the button again"
lectern sim button press; wait_state idle 15; lectern sim led
echo; lectern recordings
kill -TERM $PID; wait $PID || true; trap - EXIT

echo; echo "demo: checking every segment decodes (gst-discoverer-1.0)..."
n=0
for f in $(find "$OUT/media/recordings" -name '*.ts' | sort); do
  out=$(gst-discoverer-1.0 "$f" 2>&1) || true
  case "$out" in
    *"An error was encountered"*|*"No valid frames"*) echo "demo: $f does not decode:" >&2; echo "$out" >&2; exit 1 ;;
    *"Done discovering"*) ;;
    *) echo "demo: $f does not decode:" >&2; echo "$out" >&2; exit 1 ;;
  esac
  n=$((n+1))
done
echo "demo: $n segments decode."
echo
echo "Files:"
echo "  journal database: $OUT/media/lectern.db"
for d in "$OUT"/media/recordings/*/; do echo "  recording: $d ($(find "$d" -name '*.ts' | wc -l) segments)"; done
echo "  daemon log:       $OUT/lecternd.log"
