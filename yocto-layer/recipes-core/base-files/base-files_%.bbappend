# Lectern's mounts (wic/lectern-sdcard.wks.in): the boot partition at /uboot (U-Boot's
# environment, which RAUC changes to switch slots), the data partition at /data, grown to the
# card's size on first boot, and the journal's directory on it bind-mounted on /var/lib/lectern,
# the media directory lecternd refuses to create (an unmounted data partition must not fill the
# read-only root: the bind fails and lecternd stops with "media directory does not exist").
do_install:append:lectern() {
    install -d ${D}/uboot ${D}/data ${D}${localstatedir}/lib/lectern
    cat >> ${D}${sysconfdir}/fstab <<'FSTAB'
LABEL=boot      /uboot            vfat  defaults,noatime,umask=0077                 0  0
LABEL=data      /data             ext4  defaults,noatime,x-systemd.growfs           0  2
/data/lectern   ${localstatedir}/lib/lectern  none  bind,x-systemd.requires-mounts-for=/data    0  0
FSTAB
}
