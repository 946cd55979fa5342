#!/bin/sh
# Ember's post-install script: the .deb's postinst and the .rpm's %post.
#
#   deb: postinst configure [LAST-CONFIGURED-VERSION]   (empty: first install)
#        postinst abort-upgrade|abort-remove|abort-deconfigure ...
#   rpm: %post N   (N: how many versions are installed after this one: 1 on a
#        first install, 2 or more on an upgrade)
#
# Creates the data directory and the admin key when missing (never touches
# what is there: queued jobs survive upgrades). Then, as debhelper's and
# Fedora's systemd snippets do:
# - deb: deb-systemd-helper enables emberd.service on a first install, also
#   where systemd does not run (a chroot building an image), and keeps an
#   admin's disable on upgrades; when systemd runs, deb-systemd-invoke starts
#   it, or restarts it on an upgrade if it was running, unless policy-rc.d
#   says no (exit 101: an image build, a container). Without those helpers:
#   systemctl enable and the same policy-rc.d question asked here.
# - rpm: on a first install, systemctl preset enables emberd.service or not,
#   as the distribution's presets say; when systemd runs, it is started if
#   enabled, and restarted on an upgrade if it was running.
# DPKG_ROOT (set by dpkg when installing into another root) prefixes every
# path.
set -e

root=${DPKG_ROOT:-}
data=$root/var/lib/ember
key=$data/api.key

case "$1" in
configure)
	pkg=deb
	if [ -n "$2" ]; then action=upgrade; else action=install; fi
	;;
abort-remove | abort-deconfigure)
	# The removal that preremove began was undone: run again.
	pkg=deb
	action=restart
	;;
abort-*)
	exit 0
	;;
[0-9]*)
	pkg=rpm
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

# invoke runs systemctl ACTION emberd.service, for the deb only if
# policy-rc.d allows it: through deb-systemd-invoke, or, where that is
# missing, by asking policy-rc.d here (101: not now).
invoke() {
	if [ "$pkg" = deb ]; then
		if command -v deb-systemd-invoke >/dev/null 2>&1; then
			deb-systemd-invoke "$1" emberd.service
			return
		fi
		policy=$root/usr/sbin/policy-rc.d
		if [ -x "$policy" ]; then
			rc=0
			"$policy" emberd.service "$1" || rc=$?
			if [ "$rc" = 101 ]; then
				echo "ember: $policy forbids $1 of emberd.service" >&2
				return 0
			fi
		fi
	fi
	systemctl "$1" emberd.service
}

helper=
if [ "$pkg" = deb ] && command -v deb-systemd-helper >/dev/null 2>&1; then
	helper=yes
	# Undoes only a mask deb-systemd-helper made itself.
	deb-systemd-helper unmask emberd.service >/dev/null || true
	# True on a first install; false on an upgrade after an admin's disable.
	if deb-systemd-helper --quiet was-enabled emberd.service; then
		deb-systemd-helper enable emberd.service >/dev/null || true
	else
		deb-systemd-helper update-state emberd.service >/dev/null || true
	fi
fi
if [ "$pkg" = rpm ] && [ "$action" = install ]; then
	systemctl --no-reload preset emberd.service >/dev/null 2>&1 || true
fi

if [ -d "$root/run/systemd/system" ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	case $action in
	install)
		if [ "$pkg" = deb ] && [ -z "$helper" ]; then
			systemctl enable emberd.service >/dev/null 2>&1 || true
		fi
		if [ "$pkg" = deb ] || systemctl --quiet is-enabled emberd.service; then
			invoke start ||
				echo "ember: emberd did not start; see: journalctl -u emberd" >&2
		fi
		;;
	upgrade)
		# A running emberd restarts on the new binary; its worker containers
		# keep running and are re-adopted (KillMode=process).
		invoke try-restart ||
			echo "ember: emberd did not restart; see: journalctl -u emberd" >&2
		;;
	restart)
		invoke start || true
		;;
	esac
fi
exit 0
