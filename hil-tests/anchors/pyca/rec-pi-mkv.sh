#!/bin/sh
# pyca's Raspberry Pi camera recipe, as `cargo xtask bench-kill` runs it under pyca 4.4.
#
# Source: pyca's docs/recording/raspivid.rst, "Recording Commands", first example: raspivid
# (camera module, hardware H.264, 1280x720, 2 Mbit/s, 30 fps) piped into ffmpeg, which muxes it
# with ALSA audio (FLAC) into the file pyca names ({{dir}}/{{name}}.mkv); pyca runs it as
# `command = '/path/to/rec-pi-mkv.sh {{time}} {{dir}}/{{name}}.mkv CAMERA'`.
#
# Only the two input devices are changed, since this machine has no camera module and no ALSA
# card; the ffmpeg that writes the file keeps the documented options:
# * raspivid -t ${TIME}000 -w 1280 -h 720 -b 2000000 -fps 30 ... -o -  becomes an ffmpeg that
#   plays a pre-encoded H.264 elementary stream of the same size, rate and bitrate (CAMERA, made
#   by xtask) in real time to stdout, which is what raspivid writes there;
# * -ac 2 -f alsa -ar 16000 -i plughw:1  becomes a 2-channel 16 kHz lavfi sine.
TIME="$1"
OUTFILE="$2"
CAMERA="$3"

ffmpeg -nostats -loglevel error -re -framerate 30 -i "$CAMERA" -t "$TIME" -c:v copy -f h264 - | \
   ffmpeg -f lavfi -i sine=frequency=440:sample_rate=16000,aformat=channel_layouts=stereo -r 30 -i pipe:0 \
   -filter:a aresample=async=1 -c:a flac -c:v copy -t 300 "${OUTFILE}"
