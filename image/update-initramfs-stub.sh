#!/bin/sh
# Installed as /usr/sbin/update-initramfs while mmdebstrap installs packages
# (image/rootfs.mjs): the real one runs once at the end. Leaves an empty
# /boot/initrd.img-VERSION so raspi-firmware's kernel hook finds a file to copy.
v=
while [ $# -gt 0 ]; do
  [ "$1" = -k ] && v=${2:-}
  shift
done
[ -z "$v" ] || [ "$v" = all ] || : > "/boot/initrd.img-$v"
exit 0
