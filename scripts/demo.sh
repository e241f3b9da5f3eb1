#!/usr/bin/env bash
# The main job: builds lecternd and runs it on the simulated board with a bundled config and a
# schedule generated for "now": a short scheduled lecture that a simulated power cut interrupts
# (power-fail line, then SIGKILL as the rail dies), resumed after the "reboot" and stitched into
# one MP4 whose manifest lists the gap; then a button-started recording; both are uploaded to a
# folder target standing in for the campus NAS. Prints where the files are and exits by itself
# in about two minutes (plus the first build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins --locked
BIN=target/release

OUT="${DEMO_DIR:-$PWD/demo-out}"
rm -rf "$OUT"; mkdir -p "$OUT/media" "$OUT/nas"
cp demo/lectern.toml "$OUT/lectern.toml"
start=$(date -u -d '+4 seconds' +%Y%m%dT%H%M%SZ)
end=$(date -u -d '+34 seconds' +%Y%m%dT%H%M%SZ)
sed -e "s/@START@/$start/" -e "s/@END@/$end/" demo/schedule.ics.in > "$OUT/schedule.ics"
export LECTERN_CONFIG="$OUT/lectern.toml"
lectern() { "$BIN/lectern" "$@"; }

start_daemon() {
  "$BIN/lecternd" --config "$OUT/lectern.toml" 2>> "$OUT/lecternd.log" &
  PID=$!
  for _ in $(seq 100); do lectern status >/dev/null 2>&1 && break; sleep 0.1; done
}
wait_state() { # state, timeout seconds
  for _ in $(seq $(( $2 * 10 ))); do
    lectern --json status | grep -q "\"state\": \"$1\"" && return 0; sleep 0.1
  done
  echo "demo: timed out waiting for state $1" >&2; tail -20 "$OUT/lecternd.log" >&2; return 1
}
wait_uploaded() { # timeout seconds: until no upload is queued or running
  for _ in $(seq $(( $1 * 10 ))); do
    lectern --json status | python3 -c "import json,sys; u=json.load(sys.stdin)['uploads']; sys.exit(0 if u['queued']+u['active']==0 and u['done']>0 else 1)" && return 0
    sleep 0.1
  done
  echo "demo: timed out waiting for the uploads" >&2; tail -20 "$OUT/lecternd.log" >&2; return 1
}
wait_stitched() { # timeout seconds: until no stitch is pending or running
  for _ in $(seq $(( $1 * 10 ))); do
    if ! lectern --json recordings | grep -q '"state": "pending"' && lectern --json status | grep -q '"stitching": null'; then return 0; fi
    sleep 0.1
  done
  echo "demo: timed out waiting for stitching" >&2; tail -20 "$OUT/lecternd.log" >&2; return 1
}

echo "demo: starting lecternd (sim board) — log in $OUT/lecternd.log"
start_daemon
trap 'kill -9 $PID 2>/dev/null || true' EXIT
lectern status

echo; echo "demo: a scheduled 30 s lecture starts in a few seconds..."
wait_state recording 15; lectern status
sleep 8
echo; echo "demo: POWER CUT — the supercap HAT pulls the power-fail line; lecternd makes everything durable"
lectern sim powerfail on; wait_state power_lost 5
lectern --json status | grep -A1 '"power"' || true
echo "demo: ...and the rail dies (SIGKILL: nothing runs after this)"
kill -9 $PID; wait $PID 2>/dev/null || true
sleep 3
echo; echo "demo: power is back; the box boots and lecternd resumes the lecture as a new part"
start_daemon
wait_state recording 10; lectern status
wait_state idle 40
echo "demo: the lecture ended; its two parts are stitched into one MP4 (remux, no re-encode)"
wait_stitched 60

echo; echo "demo: pressing the front-panel button (ad-hoc recording)"
lectern sim button press; wait_state recording 10; lectern sim led
page=$(lectern --json status | python3 -c "import json,sys; print((json.load(sys.stdin)['status_page'] or {}).get('url') or '')")
if [ -n "$page" ]; then
  echo "demo: the status page is at $page (open it now); saving its picture to $OUT/preview.jpg"
  for _ in $(seq 30); do curl -sf -o "$OUT/preview.jpg" "${page}preview.jpg" && break; sleep 0.2; done
  [ -s "$OUT/preview.jpg" ] || { echo "demo: the status page gave no picture" >&2; exit 1; }
fi
sleep 8
echo "demo: pressing the button again"
lectern sim button press; wait_state idle 15; lectern sim led
wait_stitched 60
echo; lectern recordings
echo; echo "demo: each stitched recording is uploaded to the folder target (the 'NAS': $OUT/nas)"
wait_uploaded 60; lectern uploads
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
echo "demo: checking every stitched MP4 decodes end to end (ffmpeg)..."
for f in "$OUT"/media/recordings/*/*.mp4; do
  # ffmpeg's own null-muxer lines ("[null @ ...]") are about DTS it derives itself, not decoding.
  errors=$(ffmpeg -v error -i "$f" -f null - 2>&1) || { echo "demo: $f does not decode: $errors" >&2; exit 1; }
  errors=$(printf '%s' "$errors" | grep -v '^\[null @' || true)
  [ -z "$errors" ] || { echo "demo: $f decodes with errors: $errors" >&2; exit 1; }
  printf '  %s: %s s\n' "$(basename "$f")" "$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$f")"
done
echo
echo "demo: the interrupted lecture's manifest lists the gap:"
for m in "$OUT"/media/recordings/*/*.manifest.json; do
  python3 - "$m" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"  {m['recording']['id']}: {len(m['parts'])} part(s), stitched {m['stitched']['duration_s']:.1f} s, sha256 {m['stitched']['sha256'][:16]}…")
for g in m["gaps"]:
    print(f"    gap after part {g['after_part']}: {g['from']} → {g['to']} ({g['duration_s']:.1f} s), cause: {g['cause']}")
PY
done
echo
echo "demo: checking each upload is the stitched file, byte for byte (sha256)..."
for m in "$OUT"/media/recordings/*/*.manifest.json; do
  id=$(basename "$m" .manifest.json)
  want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['stitched']['sha256'])" "$m")
  got=$(sha256sum "$OUT/nas/$id/$id.mp4" | cut -d' ' -f1)
  [ "$want" = "$got" ] || { echo "demo: $OUT/nas/$id/$id.mp4 is not the stitched file" >&2; exit 1; }
  echo "  $id: uploaded, sha256 ${got:0:16}…"
done
echo
echo "Files:"
echo "  journal database: $OUT/media/lectern.db"
for d in "$OUT"/media/recordings/*/; do echo "  recording: $d ($(find "$d" -name '*.ts' | wc -l) segments, $(ls "$d" | grep -c '\.mp4$') stitched file)"; done
echo "  uploads (NAS):    $OUT/nas"
echo "  daemon log:       $OUT/lecternd.log"
