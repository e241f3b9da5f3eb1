SUMMARY = "Lectern lecture-capture daemon and its operator CLI"
DESCRIPTION = "lecternd records a V4L2 camera and an ALSA mic into a crash-safe segment journal, \
follows an Opencast calendar or an .ics schedule and uploads every recording exactly once; \
lectern is the operator CLI."
HOMEPAGE = "https://github.com/lectern-capture/lectern"
SECTION = "multimedia"
LICENSE = "GPL-3.0-or-later"
# The repository has no licence file yet; Cargo.toml's `license` is the declaration, so the
# checksum is of OE's copy of that licence (CI checks that the two agree).
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/GPL-3.0-or-later;md5=1c76c4cc354acaac30ed4d5eefea7245"

# gstreamer-rs links libgstreamer-1.0 and libgstapp-1.0 (pkg-config); rusqlite bundles SQLite.
DEPENDS += "gstreamer1.0 gstreamer1.0-plugins-base"

# The source is the repository this layer lives in, at the commit the layer comes from
# (lectern-source.inc): the crate list below (lecternd-crates.inc) is generated from that
# commit's Cargo.lock, and hil-tests/tests/yocto.rs fails CI when they differ.
require recipes-lectern/lectern-source.inc
SRC_URI += "\
    file://lectern-healthy.service \
    file://lectern-healthy \
    file://50-lectern-update.rules \
    file://lectern-rauc.conf \
"

require lecternd-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd

# Both binaries of the workspace, nothing else (xtask and the test harnesses stay on the host).
CARGO_BUILD_FLAGS:append = " -p lecternd -p lectern-cli"

# The lectern system user, as packaging/lectern.sysusers declares it (hil-tests/tests/yocto.rs
# checks they agree). useradd rather than sysusers at boot: the root filesystem is read-only, so
# the user must exist when the image is built; the sysusers file is installed too and is then a
# no-op.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/lectern --no-create-home --shell /sbin/nologin \
    --user-group --groups video,audio,gpio --comment 'Lectern lecture-capture daemon' lectern"

SYSTEMD_PACKAGES = "${PN}"
SYSTEMD_SERVICE:${PN} = "lecternd.service lectern-healthy.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    # The one unit and the one appliance config, the files CI tests (packaging/).
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/packaging/lecternd.service ${D}${systemd_system_unitdir}/lecternd.service
    install -d ${D}${sysconfdir}/lectern
    install -m 0644 ${S}/packaging/lectern.toml ${D}${sysconfdir}/lectern/lectern.toml
    install -d ${D}${nonarch_libdir}/sysusers.d
    install -m 0644 ${S}/packaging/lectern.sysusers ${D}${nonarch_libdir}/sysusers.d/lectern.conf

    # polkit: power-off (packaging/, the power-fail hold) and reboot (an installed update).
    install -d ${D}${datadir}/polkit-1/rules.d
    install -m 0644 ${S}/packaging/50-lectern-poweroff.rules ${D}${datadir}/polkit-1/rules.d/
    install -m 0644 ${UNPACKDIR}/50-lectern-update.rules ${D}${datadir}/polkit-1/rules.d/
    # D-Bus: lets the lectern user ask the RAUC service to install a bundle.
    install -d ${D}${datadir}/dbus-1/system.d
    install -m 0644 ${UNPACKDIR}/lectern-rauc.conf ${D}${datadir}/dbus-1/system.d/

    # The slot health check that gates RAUC's mark-good (docs/yocto.md, "A bad slot boots back").
    install -m 0644 ${UNPACKDIR}/lectern-healthy.service ${D}${systemd_system_unitdir}/
    install -d ${D}${libexecdir}/lectern
    install -m 0755 ${UNPACKDIR}/lectern-healthy ${D}${libexecdir}/lectern/

    # The built-in pin maps are compiled into the binaries (board/src/pinmap.rs): a name such as
    # "rpi4" never reads a file. These copies are the starting point for a box wired differently
    # (board.pinmap = "/etc/lectern/pinmap.toml" in a site config).
    install -d ${D}${datadir}/lectern/pinmaps
    install -m 0644 ${S}/board/pinmaps/*.toml ${D}${datadir}/lectern/pinmaps/
    # Every key with its default and meaning.
    install -d ${D}${docdir}/lectern
    install -m 0644 ${S}/firmware/config/src/default.toml ${D}${docdir}/lectern/lectern.toml.reference
}

FILES:${PN} += "\
    ${systemd_system_unitdir} \
    ${nonarch_libdir}/sysusers.d \
    ${datadir}/polkit-1/rules.d \
    ${datadir}/dbus-1/system.d \
    ${datadir}/lectern \
    ${libexecdir}/lectern \
"
CONFFILES:${PN} = "${sysconfdir}/lectern/lectern.toml"

# Exactly the GStreamer plugins the capture pipeline asks for by name (firmware/capture, checked
# against this list by hil-tests/tests/yocto.rs):
#   v4l2src, v4l2h264enc (Pi 4)  -> good-video4linux2
#   x264enc (Pi 5, software)     -> ugly-x264
#   h264parse                    -> bad-videoparsersbad
#   voaacenc                     -> bad-voaacenc
#   aacparse                     -> good-audioparsers
#   mpegtsmux                    -> bad-mpegtsmux
#   alsasrc                      -> base-alsa
#   level                        -> good-level
#   audioconvert, audioresample  -> base-audioconvert, base-audioresample
#   videoconvert                 -> base-videoconvertscale
#   appsink                      -> base-app
#   videorate (signal analysis)  -> base-videorate
#   decodebin (+ typefind), jpegdec (MJPEG webcams) -> base-playback, base-typefindfunctions, good-jpeg
#   queue, capsfilter            -> gstreamer1.0 (core elements)
RDEPENDS:${PN} += "\
    gstreamer1.0 \
    gstreamer1.0-plugins-bad-mpegtsmux \
    gstreamer1.0-plugins-bad-videoparsersbad \
    gstreamer1.0-plugins-bad-voaacenc \
    gstreamer1.0-plugins-base-alsa \
    gstreamer1.0-plugins-base-app \
    gstreamer1.0-plugins-base-audioconvert \
    gstreamer1.0-plugins-base-audioresample \
    gstreamer1.0-plugins-base-playback \
    gstreamer1.0-plugins-base-typefindfunctions \
    gstreamer1.0-plugins-base-videoconvertscale \
    gstreamer1.0-plugins-base-videorate \
    gstreamer1.0-plugins-good-audioparsers \
    gstreamer1.0-plugins-good-jpeg \
    gstreamer1.0-plugins-good-level \
    gstreamer1.0-plugins-good-video4linux2 \
    gstreamer1.0-plugins-ugly-x264 \
"
