# lecternd's first-choice AAC encoder is voaacenc (docs/decisions.md D15): it keeps FFmpeg's
# libraries (gst-libav) out of the daemon's memory. The vo-aacenc recipe comes from
# meta-openembedded (meta-multimedia).
PACKAGECONFIG:append:lectern = " voaacenc"
