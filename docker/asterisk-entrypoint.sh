#!/bin/sh
# Asterisk container start: the guide's steps 3 and 4 (asterisk-conf/README.md) on
# Debian's stock configuration, from the files `ami-bridge conf init` wrote into the
# shared /etc/ami-bridge volume (read-only here), once; then Asterisk in the foreground
# as its own user. The rendered fragments are in the shared /etc/asterisk/ami-bridge
# volume (the `init` service renders them, `ctl apply` changes them).
set -eu
# The variables exist for tests/unit/test_docker.py (temporary directories, its group).
kit=${AMI_BRIDGE_KIT:-/etc/ami-bridge/asterisk}
conf=${ASTERISK_ETC:-/etc/asterisk}
group=${ASTERISK_GROUP:-asterisk}
if ! grep -q '^#include "ami-bridge/extensions.conf"' "$conf/extensions.conf"; then
    cat "$kit/extensions-include.conf" >> "$conf/extensions.conf"
    echo '#include "ami-bridge/queues.conf"' >> "$conf/queues.conf"
    echo '#include "ami-bridge/voicemail.conf"' >> "$conf/voicemail.conf"
fi
grep -q '^#include "manager.d/\*.conf"' "$conf/manager.conf" \
    || echo '#include "manager.d/*.conf"' >> "$conf/manager.conf"
install -d -m 0750 -g "$group" "$conf/manager.d"
install -m 0640 -g "$group" "$kit/manager.d/ami-bridge.conf" \
    "$kit/manager.d/ami-bridge-reload.conf" "$conf/manager.d/"
chgrp "$group" "$conf/extensions.conf" && chmod 0640 "$conf/extensions.conf"
[ "${1:-}" = "--prepare-only" ] && exit 0
exec asterisk -f -U asterisk -G asterisk -vvv
