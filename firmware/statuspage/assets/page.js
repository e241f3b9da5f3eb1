// Lectern's status page: asks the box's read-only API and redraws. Every string from the box is
// put in with textContent, never as HTML. The picture is asked for only while the box records
// and this tab is visible, so a forgotten tab in the background costs the box nothing.
'use strict';

const STATUS_EVERY_MS = 1000;
const PICTURE_EVERY_MS = 1000;
const RECORDINGS_EVERY_MS = 10000;

const ALARM_TEXT = {
  silent_mic: 'Silent microphone',
  clipping: 'Audio clipping',
  black_picture: 'Black picture',
  frozen_picture: 'Frozen picture',
  no_video: 'No video signal',
  no_audio: 'No audio signal',
};

const $ = (id) => document.getElementById(id);
let state = null;
let lastRecordingsAt = 0;
let pictures = 0;

async function ask(path) {
  const r = await fetch(path, { cache: 'no-store' });
  const v = await r.json();
  if (!r.ok) {
    const e = new Error(v.error || ('HTTP ' + r.status));
    e.refused = r.status === 409;
    throw e;
  }
  return v;
}

function seconds(s) {
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + ' h ' : '') + (h || m ? m + ' min ' : '') + r + ' s';
}

function megabytes(mb) {
  return mb >= 10240 ? (mb / 1024).toFixed(1) + ' GB' : mb + ' MB';
}

function drawStatus(s) {
  $('unreachable').hidden = true;
  $('agent').textContent = s.agent;
  const st = $('state');
  st.textContent = s.state;
  st.dataset.state = s.state;
  document.title = s.agent + ' — ' + s.state;
  let summary;
  if (s.recording) {
    const since = (Date.now() - Date.parse(s.recording.started_at)) / 1000;
    summary = 'Recording “' + s.recording.title + '” for ' + seconds(since);
    if (s.recording.planned_end) summary += ', until ' + new Date(s.recording.planned_end).toLocaleTimeString();
    if (s.state === 'retrying') summary += '. The capture failed (' + (s.recording.last_error || 'device error') + '); trying again.';
  } else if (s.schedule && s.schedule.next) {
    summary = 'Idle. Next: “' + s.schedule.next.title + '” at ' + new Date(s.schedule.next.start).toLocaleString();
  } else {
    summary = 'Idle. Nothing scheduled.';
  }
  $('summary').textContent = summary;

  const alarms = [];
  for (const a of (s.signals && s.signals.alarms) || []) {
    alarms.push({ key: a.alarm, text: (ALARM_TEXT[a.alarm] || a.alarm) + ' for ' + seconds(a.for_s) });
  }
  for (const a of (s.uploads && s.uploads.alarms) || []) alarms.push({ key: 'upload', text: 'Upload: ' + a });
  if (s.storage && s.storage.full) alarms.push({ key: 'storage_full', text: 'Storage full: recordings are refused' });
  if (s.devices) {
    for (const input of ['camera', 'mic']) {
      const d = s.devices[input];
      if (d && d.ok === false && !s.recording) alarms.push({ key: input + '_unavailable', text: d.error || (input + ' unavailable') });
    }
  }
  const list = $('alarms');
  list.replaceChildren();
  for (const a of alarms) {
    const li = document.createElement('li');
    li.className = 'alarm';
    li.dataset.alarm = a.key;
    li.textContent = a.text;
    list.append(li);
  }
  if (!alarms.length) {
    const li = document.createElement('li');
    li.className = 'none';
    li.textContent = 'No alarms.';
    list.append(li);
  }

  const g = s.storage || {};
  $('storage').textContent = g.error ? ('Storage: ' + g.error)
    : 'Free on the card: ' + (g.free_mb == null ? 'unknown' : megabytes(g.free_mb)) + ' (reserve ' + megabytes(g.reserve_mb) + ')' + (g.full ? ' — full' : '');
  const u = s.uploads;
  $('uploads').textContent = !u ? 'No upload target configured.'
    : 'Uploads: ' + u.active + ' running, ' + u.queued + ' queued, ' + u.parked + ' parked, ' + u.done + ' done' +
      (u.bytes_pending ? ' (' + megabytes(Math.round(u.bytes_pending / 1048576)) + ' to go)' : '') + (u.backlog ? ' — backlog' : '');

  if (!s.recording) clearPicture('No picture: not recording.');
  const changed = state !== s.state;
  state = s.state;
  if (changed || Date.now() - lastRecordingsAt > RECORDINGS_EVERY_MS) {
    refreshRecordings();
    // A recording that just ended gets its quality verdict when its part is put away: look
    // again in 3 s rather than at the next 10 s round.
    lastRecordingsAt = changed ? Date.now() - RECORDINGS_EVERY_MS + 3000 : Date.now();
  }
  $('updated').textContent = 'Updated ' + new Date().toLocaleTimeString();
}

function clearPicture(note) {
  $('picture').hidden = true;
  $('picture-note').textContent = note;
  $('meter-peak').value = -60;
  $('meter-rms').value = -60;
  $('meter-text').textContent = 'no sound reading';
}

function drawPreview(p) {
  if (p.jpeg_base64) {
    const img = $('picture');
    img.src = 'data:image/jpeg;base64,' + p.jpeg_base64;
    img.hidden = false;
    pictures += 1;
    img.dataset.pictures = String(pictures);
    $('picture-note').textContent = 'Picture ' + (p.age_ms / 1000).toFixed(1) + ' s old.';
  } else {
    $('picture-note').textContent = 'The picture is coming…';
  }
  const m = p.meter;
  if (m) {
    $('meter-peak').value = Math.max(-60, m.peak_db);
    $('meter-rms').value = Math.max(-60, m.rms_db);
    $('meter-text').textContent = 'peak ' + m.peak_db.toFixed(1) + ' dBFS, level ' + m.rms_db.toFixed(1) + ' dBFS';
  } else {
    $('meter-text').textContent = 'no sound reading';
  }
}

async function refreshRecordings() {
  let v;
  try { v = await ask('/api/recordings'); } catch (e) { return; }
  $('recordings-count').textContent = v.total > v.recordings.length ? '(newest ' + v.recordings.length + ' of ' + v.total + ')' : '';
  const body = $('recordings');
  body.replaceChildren();
  for (const r of v.recordings) {
    const tr = document.createElement('tr');
    tr.dataset.id = r.id;
    const ms = r.media_duration_ns ? r.media_duration_ns / 1e6 : (r.ended_at_ms || Date.now()) - r.started_at_ms;
    const verdict = r.quality ? r.quality.verdict : '';
    const cells = [
      new Date(r.started_at_ms).toLocaleString(),
      r.title,
      seconds(ms / 1000),
      r.state,
      verdict + (r.quality && r.quality.alarms.length ? ' (' + r.quality.alarms.map((a) => ALARM_TEXT[a] || a).join(', ') + ')' : ''),
      r.evicted_at_ms ? 'uploaded, removed' : (r.stitch ? r.stitch.state : 'not final'),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement('td');
      td.textContent = text;
      if (i === 4) { td.className = verdict; td.dataset.verdict = verdict; }
      tr.append(td);
    });
    body.append(tr);
  }
}

async function statusLoop() {
  try {
    drawStatus(await ask('/api/status'));
  } catch (e) {
    $('unreachable').hidden = false;
    $('unreachable-why').textContent = e.message;
  }
  setTimeout(statusLoop, STATUS_EVERY_MS);
}

async function pictureLoop() {
  if ((state === 'recording' || state === 'retrying') && document.visibilityState === 'visible') {
    try {
      drawPreview(await ask('/api/preview'));
    } catch (e) {
      clearPicture(e.refused ? 'No picture: ' + e.message : 'No picture (' + e.message + ')');
    }
  }
  setTimeout(pictureLoop, PICTURE_EVERY_MS);
}

statusLoop();
pictureLoop();
