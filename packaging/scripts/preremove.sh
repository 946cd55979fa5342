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
# its files are gone (stopping it when it is not running does nothing). The
# deb stops them through deb-systemd-invoke, which asks policy-rc.d first
# (where it is missing, policy-rc.d is asked here). An upgrade leaves both
# running: postinstall restarts emberd, which gets the sockets again. The rpm
# also disables both here, since rpm has no purge; the deb leaves them
# enabled, so that a reinstall finds them as they were (postremove's purge
# deletes the service's enable link).
set -e

root=${DPKG_ROOT:-}

case "$1" in
remove | deconfigure) action=stop ;;
0) action=disable ;;
*) exit 0 ;;
esac

if [ -d "$root/run/systemd/system" ]; then
	case $action in
	stop)
		if command -v deb-systemd-invoke >/dev/null 2>&1; then
			deb-systemd-invoke stop emberd.socket emberd.service || true
			exit 0
		fi
		policy=$root/usr/sbin/policy-rc.d
		if [ -x "$policy" ]; then
			rc=0
			"$policy" emberd.service stop || rc=$?
			if [ "$rc" = 101 ]; then
				echo "ember: $policy forbids stop of emberd.service" >&2
				exit 0
			fi
		fi
		systemctl stop emberd.socket emberd.service || true
		;;
	disable) systemctl disable --now emberd.socket emberd.service || true ;;
	esac
fi
exit 0
