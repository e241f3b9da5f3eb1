SUMMARY = "Lectern front-panel device-tree overlays for the Raspberry Pi"
DESCRIPTION = "Compiles board/overlays/*-overlay.dts (button and power-fail pulls, the LED's \
boot level) into .dtbo files for the boot partition; conf/distro/lectern.conf loads them from \
config.txt."
HOMEPAGE = "https://github.com/lectern-capture/lectern"
SECTION = "bsp"
LICENSE = "GPL-3.0-or-later"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/GPL-3.0-or-later;md5=1c76c4cc354acaac30ed4d5eefea7245"

DEPENDS = "dtc-native"

require recipes-lectern/lectern-source.inc

inherit deploy

COMPATIBLE_MACHINE = "^rpi$"
PACKAGE_ARCH = "${MACHINE_ARCH}"

# The same dtc call board/tests/overlays.rs makes in CI: X-overlay.dts -> X.dtbo.
do_compile() {
    for dts in ${S}/board/overlays/*-overlay.dts; do
        name=$(basename "$dts" -overlay.dts)
        dtc -@ -I dts -O dtb -o "${B}/$name.dtbo" "$dts"
    done
}

do_install[noexec] = "1"

do_deploy() {
    install -d ${DEPLOYDIR}/lectern-overlays
    install -m 0644 ${B}/*.dtbo ${DEPLOYDIR}/lectern-overlays/
}
addtask deploy after do_compile before do_build
