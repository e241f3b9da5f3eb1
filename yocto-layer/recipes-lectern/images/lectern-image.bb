SUMMARY = "Lectern appliance image: read-only root, A/B slots, data partition"
DESCRIPTION = "A read-only root filesystem with lecternd, RAUC and the slot health check; the \
journal lives on a separate data partition. The wic image holds boot, rootfs A, rootfs B and data."
HOMEPAGE = "https://github.com/lectern-capture/lectern"
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"
# rauc-service: the D-Bus service `rauc install` talks to; rauc itself brings the U-Boot
# environment tools (u-boot-fw-utils, from libubootenv) for PREFERRED_PROVIDER_virtual/bootloader.
IMAGE_INSTALL += "\
    lecternd \
    rauc \
    rauc-service \
    rauc-mark-good \
    polkit \
    kernel-image \
"

# The SD card (wic/lectern-sdcard.wks.in) and the ext4 root filesystem RAUC bundles carry.
IMAGE_FSTYPES = "ext4 wic.bz2 wic.bmap"
WKS_FILE = "lectern-sdcard.wks.in"
# rootfs slots are fixed-size partitions; the image must fit one with room for updates to grow.
IMAGE_ROOTFS_MAXSIZE = "1572864"

# The data partition is populated from ${IMAGE_ROOTFS}/data (wic --rootfs-dir) and mounted at /data:
# the journal at /data/lectern (bind-mounted on /var/lib/lectern, the media directory), RAUC's
# central status at /data/rauc, update bundles at /data/updates. The root partitions leave /data out.
ROOTFS_POSTPROCESS_COMMAND += "lectern_data_dirs"
lectern_data_dirs[doc] = "Creates the directories the data partition is populated from"
lectern_data_dirs() {
    install -d -m 0755 ${IMAGE_ROOTFS}/data
    install -d -m 0750 ${IMAGE_ROOTFS}/data/lectern
    install -d -m 0700 ${IMAGE_ROOTFS}/data/rauc
    install -d -m 0755 ${IMAGE_ROOTFS}/data/updates
    install -d -m 0755 ${IMAGE_ROOTFS}/var/lib/lectern
}
