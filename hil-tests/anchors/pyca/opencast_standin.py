#!/usr/bin/env python3
"""A tiny Opencast stand-in for the pyca 4.4 anchor of `cargo xtask bench-record`.

This is a benchmark fixture, not an Opencast test double: it serves exactly what pyca 4.4 needs
for one capture cycle, on 127.0.0.1 only, and nothing else. It is deliberately small; the
Opencast double for the agent's own upload tests belongs to a later issue and should not grow
out of this file.

What pyca 4.4 asks for (read from its source: pyca/utils.py, schedule.py, capture.py, ingest.py):

* ``GET /services/available.json?serviceType=org.opencastproject.{capture.admin,scheduler,ingest}``
  -> ``{"services": {"service": {"host": ..., "path": ..., "online": true, "active": true}}}``;
  pyca joins host + path and uses that as the base of the service.
* ``POST /capture-admin/agents/<name>`` (form: address, state) and
  ``POST /capture-admin/recordings/<uid>`` (form: state): agent and recording state; accepted
  and logged.
* ``GET /recordings/calendars?agentid=...&cutoff=...`` -> an iCalendar with one VEVENT from
  ``--start`` (Unix seconds) lasting ``--minutes``. pyca's parse_ical splits on CRLF, reads
  DTSTART/DTEND/UID/SUMMARY and base64 ATTACHes with FMTTYPE and X-APPLE-FILENAME; ingest later
  looks for the ``org.opencastproject.capture.agent.properties`` attachment, so both the usual
  attachments (episode.xml and the agent properties) are included.
* ``/ingest/{createMediaPackage,addDCCatalog,addTrack,ingest}``: the body is read and thrown
  away, and a minimal mediapackage XML is returned. The benchmark stops pyca once the capture has
  ended, so normally ingest never starts; these are here so that it cannot fail if it does.

Every request is logged to stderr with the time, so a run can be checked against pyca's log.
Usage: ``opencast_standin.py --start EPOCH --minutes N [--port 0] [--port-file FILE]``; the chosen
port is written to ``--port-file`` (and printed) once the server listens.
"""

import argparse
import base64
import datetime
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MEDIAPACKAGE = ('<?xml version="1.0" encoding="UTF-8"?>'
                '<mediapackage xmlns="http://mediapackage.opencastproject.org" '
                'id="bench-mp" start="2000-01-01T00:00:00Z"><media/><metadata/>'
                '<attachments/><publications/></mediapackage>')

# Service type (after "org.opencastproject.") -> path on this server.
SERVICES = {"capture.admin": "/capture-admin", "scheduler": "/recordings", "ingest": "/ingest"}


def ical_time(epoch):
    """RFC 5545 UTC date-time, as Opencast writes it."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def attach(filename, fmttype, text):
    """One base64 ATTACH line the way Opencast's scheduler emits it (unfolded: pyca unfolds anyway)."""
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return (f"ATTACH;FMTTYPE={fmttype};VALUE=BINARY;ENCODING=BASE64;"
            f"X-APPLE-FILENAME={filename}:{data}")


def calendar(start, minutes, agent):
    """The whole schedule: one event, `minutes` long, starting at `start`."""
    end = start + minutes * 60
    uid = f"bench-{start}"
    episode = ('<?xml version="1.0" encoding="UTF-8"?><dublincore '
               'xmlns="http://www.opencastproject.org/xsd/1.0/dublincore/" '
               'xmlns:dcterms="http://purl.org/dc/terms/">'
               f'<dcterms:title>Benchmark {minutes} min</dcterms:title>'
               f'<dcterms:spatial>{agent}</dcterms:spatial></dublincore>')
    properties = ("org.opencastproject.workflow.definition=fast\n"
                  f"capture.device.names=default\nevent.location={agent}\n")
    lines = [
        "BEGIN:VCALENDAR", "PRODID:-//lectern//bench-standin//EN", "VERSION:2.0", "CALSCALE:GREGORIAN",
        "BEGIN:VEVENT",
        f"DTSTAMP:{ical_time(start)}",
        f"DTSTART:{ical_time(start)}",
        f"DTEND:{ical_time(end)}",
        f"SUMMARY:Benchmark {minutes} min",
        f"UID:{uid}",
        f"LOCATION:{agent}",
        attach("episode.xml", "application/xml", episode),
        attach("org.opencastproject.capture.agent.properties", "application/text", properties),
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that libcurl's "Expect: 100-continue" on multipart uploads is answered at once.
    protocol_version = "HTTP/1.1"
    start = 0
    minutes = 1

    def log_message(self, fmt, *args):
        sys.stderr.write("%s standin: %s\n" % (datetime.datetime.now().isoformat(timespec="seconds"), fmt % args))

    def reply(self, code, body, ctype="text/plain"):
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def drain(self):
        """Reads and discards the request body (form fields or an uploaded track)."""
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/services/available.json":
            kind = query.get("serviceType", [""])[0].removeprefix("org.opencastproject.")
            if kind not in SERVICES:
                return self.reply(200, json.dumps({"services": ""}), "application/json")
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            service = {"type": f"org.opencastproject.{kind}", "host": host, "path": SERVICES[kind],
                       "active": True, "online": True, "maintenance": False}
            return self.reply(200, json.dumps({"services": {"service": service}}), "application/json")
        if url.path == "/recordings/calendars":
            agent = query.get("agentid", ["agent"])[0]
            return self.reply(200, calendar(self.start, self.minutes, agent), "text/calendar")
        if url.path == "/ingest/createMediaPackage":
            return self.reply(200, MEDIAPACKAGE, "text/xml")
        self.reply(404, "not served by the benchmark stand-in\n")

    def do_POST(self):
        self.drain()
        path = urlsplit(self.path).path
        if path.startswith("/capture-admin/"):
            return self.reply(200, "")
        if path.startswith("/ingest/"):
            return self.reply(200, MEDIAPACKAGE, "text/xml")
        self.reply(404, "not served by the benchmark stand-in\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=int, required=True, help="event start, Unix seconds")
    ap.add_argument("--minutes", type=int, required=True, help="event length")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the chosen port here once listening")
    args = ap.parse_args()
    Handler.start, Handler.minutes = args.start, args.minutes
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
