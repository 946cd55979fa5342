#!/bin/sh
# Ember's post-remove script: the .deb's postrm and the .rpm's %postun.
#
#   deb: postrm remove | purge | upgrade NEW-VERSION | disappear ... |
#        failed-upgrade OLD-VERSION | abort-install ... | abort-upgrade ...
#   rpm: %postun N   (N: how many versions stay installed: 0 on an erase, 1
#        or more on an upgrade)
#
# Removal keeps the data (/var/lib/ember: queued jobs, images, the admin key)
# and the configuration (/etc/ember; dpkg and rpm keep the conffile
# /etc/default/ember themselves). Only a deb purge (dpkg -P, apt purge)
# deletes both (and dpkg the conffiles). An rpm erase never deletes them (rpm has no purge): remove
# them by hand with rm -rf /var/lib/ember /etc/ember.
set -e

root=${DPKG_ROOT:-}

if [ "$1" = purge ]; then
	# Never delete through a mount: a container emberd could not clean up
	# may still have its root file system mounted in there.
	if [ -d "$root/var/lib/ember" ] &&
		awk -v d="$root/var/lib/ember" 'index($2, d "/") == 1 || $2 == d { found = 1 } END { exit !found }' /proc/self/mounts 2>/dev/null; then
		echo "ember: file systems are still mounted under $root/var/lib/ember; not deleting it (unmount them, then rm -rf $root/var/lib/ember)" >&2
	else
		rm -rf "$root/var/lib/ember"
	fi
	rm -rf "$root/etc/ember"
	# What deb-systemd-helper enable recorded and made (it honours
	# DPKG_ROOT), then what `systemctl enable` made; the unit file itself is
	# already gone.
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper purge emberd.service >/dev/null || true
		deb-systemd-helper unmask emberd.service >/dev/null || true
	fi
	rm -f "$root/etc/systemd/system/multi-user.target.wants/emberd.service"
	rm -f "$root/etc/systemd/system/sockets.target.wants/emberd.socket"
fi

if [ -d "$root/run/systemd/system" ]; then
	case "$1" in
	remove | purge | 0) systemctl daemon-reload >/dev/null 2>&1 || true ;;
	esac
fi
exit 0
