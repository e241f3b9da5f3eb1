SUMMARY = "Lectern lecture-capture daemon"
DESCRIPTION = "Records a V4L2 camera and an ALSA mic into a crash-safe segment journal."
LICENSE = "GPL-3.0-or-later"
# Skeleton: the crate list (cargo-bitbake) and SRCREV come with the Yocto issue.

inherit cargo systemd

SRC_URI += "file://${THISDIR}/../../../packaging/lecternd.service"
SYSTEMD_SERVICE:${PN} = "lecternd.service"
RDEPENDS:${PN} += "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${WORKDIR}/lecternd.service ${D}${systemd_system_unitdir}/
}
