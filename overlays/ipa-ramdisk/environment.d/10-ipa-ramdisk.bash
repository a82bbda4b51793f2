# Packages ironic-python-agent's Debian package depends on that the agent
# does not use to look up, heartbeat, clean or deploy (see README.md): a
# stub package "provides" them, which keeps the ramdisk under 300 MiB.
# Set to "" for the package's full dependency set (about 350 MiB).
export IPA_RAMDISK_OMIT=${IPA_RAMDISK_OMIT-"libguestfs-tools python3-guestfs python3-libvirt stress-ng sysbench tuned git man-db"}
