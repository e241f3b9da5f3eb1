#!/bin/sh
# pyca's Raspberry Pi camera-to-MP4 recipe, as `cargo xtask bench-kill` runs it under pyca 4.4.
#
# Source: pyca's repository, capture_plugins/raspberry-pi-vo-ffmpeg.py (video only): raspivid
# (camera module, hardware H.264, its default 1920x1080, 4 Mbit/s, 30 fps) piped into
# `ffmpeg -r 30 -i pipe:0 -c:v copy -y FILE.mp4`. pyca runs it as
# `command = '/path/to/rec-pi-mp4.sh {{time}} {{dir}}/{{name}}.mp4 CAMERA'`.
#
# Only the input device is changed, since this machine has no camera module: raspivid becomes
# an ffmpeg that plays a pre-encoded H.264 elementary stream of the same size, rate and bitrate
# (CAMERA, made by xtask) in real time to stdout, which is what raspivid writes there. The ffmpeg
# that writes the MP4 keeps the plugin's options.
TIME="$1"
OUTFILE="$2"
CAMERA="$3"

ffmpeg -nostats -loglevel error -re -framerate 30 -i "$CAMERA" -t "$TIME" -c:v copy -f h264 - | \
   ffmpeg -r 30 -i pipe:0 -c:v copy -y "${OUTFILE}"
