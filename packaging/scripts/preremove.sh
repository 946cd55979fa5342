#!/bin/sh
# Ember's pre-remove script: the .deb's prerm and the .rpm's %preun.
#
#   deb: prerm remove | upgrade NEW-VERSION | deconfigure ... | failed-upgrade OLD-VERSION
#   rpm: %preun N   (N: how many versions stay installed: 0 on an erase, 1 or
#        more on an upgrade, where the new version's %post already ran)
#
# On a real removal, and only when systemd runs this machine, stops emberd
# (which stops its workers; queued jobs stay on disk). An upgrade leaves it
# running: postinstall restarts it. The rpm also disables it here, since rpm
# has no purge; the deb keeps it enabled until purge, so that a reinstall
# finds it as it was.
set -e

case "$1" in
remove | deconfigure) action=stop ;;
0) action=disable ;;
*) exit 0 ;;
esac

if [ -d "${DPKG_ROOT:-}/run/systemd/system" ]; then
	case $action in
	stop) systemctl stop emberd.service || true ;;
	disable) systemctl disable --now emberd.service || true ;;
	esac
fi
exit 0
