#!/bin/sh
# Ember's pre-remove script: the .deb's prerm and the .rpm's %preun.
#
#   deb: prerm remove | upgrade NEW-VERSION | deconfigure ... | failed-upgrade OLD-VERSION
#   rpm: %preun N   (N: how many versions stay installed: 0 on an erase, 1 or
#        more on an upgrade, where the new version's %post already ran)
#
# On a real removal, and only when systemd runs this machine, stops emberd
# (which stops its workers; queued jobs stay on disk) and emberd.socket, the
# opt-in socket unit, first, so that no connection starts emberd again once
# its files are gone (stopping it when it is not running does nothing). An
# upgrade leaves both running: postinstall restarts emberd, which gets the
# sockets again. The rpm also disables both here, since rpm has no purge; the
# deb leaves them enabled, so that a reinstall finds them as they were
# (postremove's purge deletes the service's enable link).
set -e

case "$1" in
remove | deconfigure) action=stop ;;
0) action=disable ;;
*) exit 0 ;;
esac

if [ -d "${DPKG_ROOT:-}/run/systemd/system" ]; then
	case $action in
	stop) systemctl stop emberd.socket emberd.service || true ;;
	disable) systemctl disable --now emberd.socket emberd.service || true ;;
	esac
fi
exit 0
