#!/bin/sh
# Ember's post-install script: the .deb's postinst and the .rpm's %post.
#
#   deb: postinst configure [LAST-CONFIGURED-VERSION]   (empty: first install)
#        postinst abort-upgrade|abort-remove|abort-deconfigure ...
#   rpm: %post N   (N: how many versions are installed after this one: 1 on a
#        first install, 2 or more on an upgrade)
#
# Creates the data directory and the admin key when missing (never touches
# what is there: queued jobs survive upgrades), then, only when systemd runs
# this machine, enables and starts emberd on a first install or restarts it
# on an upgrade if it was running. DPKG_ROOT (set by dpkg when installing
# into another root) prefixes every path.
set -e

root=${DPKG_ROOT:-}
data=$root/var/lib/ember
key=$data/api.key

case "$1" in
configure)
	if [ -n "$2" ]; then action=upgrade; else action=install; fi
	;;
abort-remove | abort-deconfigure)
	# The removal that preremove began was undone: run again.
	action=restart
	;;
abort-*)
	exit 0
	;;
[0-9]*)
	if [ "$1" -ge 2 ]; then action=upgrade; else action=install; fi
	;;
*)
	echo "ember postinstall: unknown argument '$1'" >&2
	exit 0
	;;
esac

if [ ! -d "$data" ]; then
	mkdir -p "$data"
	chmod 0750 "$data"
fi

# The admin key: 32 random bytes as hex, root only. emberd would create one
# on its first start too; creating it here lets `ember` work at once.
if [ ! -e "$key" ]; then
	tmp=$key.tmp.$$
	(
		umask 077
		od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp"
		echo >>"$tmp"
	)
	chmod 0600 "$tmp"
	mv "$tmp" "$key"
fi

if [ -d "$root/run/systemd/system" ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	case $action in
	install)
		systemctl enable emberd.service >/dev/null 2>&1 || true
		systemctl start emberd.service ||
			echo "ember: emberd did not start; see: journalctl -u emberd" >&2
		;;
	upgrade)
		# A running emberd restarts on the new binary; its worker containers
		# keep running and are re-adopted (KillMode=process).
		systemctl try-restart emberd.service ||
			echo "ember: emberd did not restart; see: journalctl -u emberd" >&2
		;;
	restart)
		systemctl start emberd.service || true
		;;
	esac
fi
exit 0
