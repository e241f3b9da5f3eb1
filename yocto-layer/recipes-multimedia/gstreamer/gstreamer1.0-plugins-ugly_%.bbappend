# x264enc: the software H.264 encoder of boards without an encoder block (the Pi 5), and the
# fallback everywhere (firmware/capture/src/encoder.rs). Needs LICENSE_FLAGS_ACCEPTED for x264
# (conf/distro/lectern.conf).
PACKAGECONFIG:append:lectern = " x264"
