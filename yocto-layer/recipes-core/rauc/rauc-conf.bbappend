# Lectern's slot layout (wic/lectern-sdcard.wks.in) and its keyring. RAUC_KEYRING_FILE is the CA
# certificate bundles are checked against: set it in local.conf (docs/yocto.md, "Keys").
FILESEXTRAPATHS:prepend:lectern := "${THISDIR}/files:"

do_install:append:lectern() {
    sed -i -e 's/@@MACHINE@@/${MACHINE}/' ${D}${sysconfdir}/rauc/system.conf
}
