# Where fw_printenv/fw_setenv (and RAUC's uboot backend through them) find U-Boot's environment:
# uboot.env on the boot partition, mounted at /uboot (recipes-core/base-files).
FILESEXTRAPATHS:prepend:lectern := "${THISDIR}/files:"
SRC_URI:append:lectern = " file://fw_env.config"

do_install:append:lectern() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${UNPACKDIR}/fw_env.config ${D}${sysconfdir}/fw_env.config
}
