SUMMARY = "Lectern RAUC update bundle (the root filesystem of lectern-image)"
DESCRIPTION = "A signed verity bundle that RAUC installs into the inactive root slot; \
lecternd installs it only while no lecture is recorded (lectern update BUNDLE)."
HOMEPAGE = "https://github.com/lectern-capture/lectern"
SECTION = "base"
LICENSE = "MIT"

# A bundle has no sources of its own: it packs the image named by RAUC_SLOT_rootfs.
SRC_URI = ""

inherit bundle

RAUC_BUNDLE_FORMAT = "verity"
# Must equal [system] compatible in recipes-core/rauc/files/system.conf (after substitution).
RAUC_BUNDLE_COMPATIBLE = "lectern-${MACHINE}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "Lectern ${DISTRO_VERSION} for ${MACHINE}"
RAUC_BUNDLE_SLOTS = "rootfs"
# (RAUC_SLOT_<name> is named after the slot, so oelint cannot know it.)
# nooelint: oelint.vars.mispell.unknown
RAUC_SLOT_rootfs = "lectern-image"
# nooelint: oelint.vars.mispell.unknown
RAUC_SLOT_rootfs[fstype] = "ext4"

# The signing key and certificate never live in this layer: set them in local.conf or a site
# layer (docs/yocto.md, "Keys").
RAUC_KEY_FILE ??= ""
RAUC_CERT_FILE ??= ""
