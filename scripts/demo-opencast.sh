#!/usr/bin/env bash
# Sim demo of the Opencast capture agent: the Opencast test double (hil-tests/opencast-double)
# schedules a 15 s lecture for this box; lecternd on the simulated board fetches the calendar with
# Digest auth, records the lecture, stitches it and ingests the MP4. Then the server goes away for
# a second lecture, which is recorded from the cached calendar and ingested once the server is back.
# Exits by itself in about a minute and a half (plus the first build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins --locked
BIN=target/release

OUT="${DEMO_DIR:-$PWD/demo-opencast-out}"
rm -rf "$OUT"; mkdir -p "$OUT/media" "$OUT/run"
lectern() { "$BIN/lectern" --config "$OUT/lectern.toml" "$@"; }
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done' EXIT

T0=$(date +%s)  # absolute event times: the restarted double must serve the same calendar
start_double() {
  "$BIN/opencast-double" --digest --user opencast_system_account --password CHANGE_ME --port "$PORT" \
    --event "uid=lecture-1,agent=demo-room,start=$((T0+8)),end=$((T0+23)),title=Demo lecture 1,series=demo-series,workflow=fast" \
    --event "uid=lecture-2,agent=demo-room,start=$((T0+52)),end=$((T0+64)),title=Demo lecture 2,series=demo-series,workflow=fast" \
    --state-out "$OUT/opencast-state.json" > "$OUT/double.log" 2>&1 &
  DOUBLE=$!; pids+=("$DOUBLE")
  for _ in $(seq 50); do grep -q "listening on" "$OUT/double.log" && return 0; sleep 0.1; done
  echo "demo: the Opencast double did not start" >&2; cat "$OUT/double.log" >&2; exit 1
}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_double
URL="http://127.0.0.1:$PORT"
cat > "$OUT/lectern.toml" <<TOML
[agent]
name = "demo-room"
[board]
backend = "sim"
sim_socket = "run/sim.sock"
[control]
socket = "run/control.sock"
[journal]
media_dir = "media"
[clock]
trust = "always"
[opencast]
url = "$URL"
username = "opencast_system_account"
password = "CHANGE_ME"
auth = "digest"
calendar_poll_s = 5
retry_initial_s = 1
retry_max_s = 4
[upload]
start_delay_max_s = 0                   # a demo box need not wait for the rest of the building
retry_initial_s = 1
retry_max_s = 4
TOML

echo "demo: Opencast test double on $URL; starting lecternd — log in $OUT/lecternd.log"
"$BIN/lecternd" --config "$OUT/lectern.toml" 2> "$OUT/lecternd.log" &
LPID=$!; pids+=("$LPID")
for _ in $(seq 100); do lectern status >/dev/null 2>&1 && break; sleep 0.1; done
state() { curl -s "$URL/__double/state"; }
wait_for() { # python expression over the double's state `s`, timeout seconds, what
  for _ in $(seq $(( $2 * 5 ))); do
    state | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "demo: timed out waiting for $3" >&2; tail -20 "$OUT/lecternd.log" >&2; exit 1
}
rec_states() { state | python3 -c "import json,sys; s=json.load(sys.stdin); print(' -> '.join(r['state'] for r in s['recording_states'] if r['id']=='$1'))"; }

echo "demo: lecture 1 starts in a few seconds (15 s)..."
wait_for "any(r['id']=='lecture-1' and r['state']=='upload_finished' for r in s['recording_states'])" 60 "lecture 1's ingest"
echo "demo: lecture 1 in Opencast: $(rec_states lecture-1)"

echo; echo "demo: the Opencast server goes DOWN; lecture 2 is recorded from the cached calendar"
kill -TERM "$DOUBLE"; wait "$DOUBLE" 2>/dev/null || true
for _ in $(seq 300); do lectern --json recordings | grep -q '"lecture-2"' && break; sleep 0.2; done
lectern status | sed -n '1,12p'
for _ in $(seq 300); do
  lectern --json recordings | python3 -c "import json,sys; r=[x for x in json.load(sys.stdin)['recordings'] if x['id']=='lecture-2']; sys.exit(0 if r and r[0]['stitch'] and r[0]['stitch']['state']=='done' else 1)" && break
  sleep 0.2
done
echo "demo: lecture 2 recorded and stitched offline; queued for the server: $(lectern --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["opencast"]["outbox_pending"])') operations"

echo; echo "demo: the server is back"
start_double
wait_for "any(r['id']=='lecture-2' and r['state']=='upload_finished' for r in s['recording_states'])" 60 "lecture 2's ingest"
echo "demo: lecture 2 in Opencast: $(rec_states lecture-2)"
state | python3 -c "
import json,sys
s=json.load(sys.stdin)
for mp in s['mediapackages']:
    ing=mp.get('ingested')
    if ing: print(f\"  ingested {ing['workflow_instance_id']}: workflow {ing['workflow_definition_id']}, tracks {[(t['flavor'], t['bytes']) for t in mp['tracks']]}\")
"
kill -TERM "$LPID"; wait "$LPID" || true

echo "Files: media $OUT/media, daemon log $OUT/lecternd.log, double log $OUT/double.log"
