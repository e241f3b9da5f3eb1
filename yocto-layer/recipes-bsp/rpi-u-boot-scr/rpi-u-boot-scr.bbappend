# Replaces meta-raspberrypi's boot script with Lectern's A/B slot selection for RAUC.
FILESEXTRAPATHS:prepend:lectern := "${THISDIR}/files:"
