#!/bin/sh
# The compose file's `init` service, as root in the bridge image, before Asterisk and
# the bridge start: the steps 1 and 3 of the guide (asterisk-conf/README.md) that need
# ami-bridge itself. Asterisk's side (include lines, manager users) is done by
# asterisk-entrypoint.sh in its own container. Idempotent: a second `up` keeps the
# config, its secrets and any tenant edits. The variables exist for
# tests/unit/test_docker.py, which runs this script against temporary directories.
set -eu
etc=${AMI_BRIDGE_ETC:-/etc/ami-bridge}
conf=${ASTERISK_ETC:-/etc/asterisk}
owner=${AMI_BRIDGE_OWNER:-ami-bridge:ami-bridge}
if [ ! -e "$etc/bridge.toml" ]; then
    ami-bridge conf init "$etc"
    # In this compose the bridge runs as an unprivileged user, which cannot confine the
    # VTS processes (docs/confinement.md; docker/README.md says what that means), and
    # `ctl apply` writes into the fragments volume shared with Asterisk.
    sed -i -e '/^\[bridge\]$/a confine = "off"   # docker/README.md: unprivileged container' \
        -e "s|^# asterisk_conf_dir = .*|asterisk_conf_dir = \"$conf\"|" \
        "$etc/bridge.toml"
fi
ami-bridge conf render --config "$etc/bridge.toml" --out "$conf"
# The bridge's user reads its config and secrets and rewrites the fragments (ctl apply).
chown -R "$owner" "$etc" "$conf/ami-bridge"
