#!/bin/sh
# The compose file's `init` service, as root in the bridge image, before Asterisk and
# the bridge start: the steps 1 and 3 of the guide (asterisk-conf/README.md) that need
# ami-bridge itself. Asterisk's side (include lines, manager users) is done by
# asterisk-entrypoint.sh in its own container. Idempotent: a second `up` keeps the
# config, its secrets and any tenant edits. The variables exist for
# tests/unit/test_docker.py, which runs this script against temporary directories.
#
# Asterisk's configuration lives in its own container; the bridge sees only the
# fragments volume and, beside it, the lines the guide adds to extensions.conf (the
# kit's extensions-include.conf: [globals] AB_AGI_URL and the include). That directory
# is the bridge's asterisk_conf_dir, so `conf render` and `ctl apply` check the rendered
# fragments as Asterisk includes them (docker/README.md).
set -eu
etc=${AMI_BRIDGE_ETC:-/etc/ami-bridge}
owner=${AMI_BRIDGE_OWNER:-ami-bridge:ami-bridge}
view=$etc/asterisk-view
if [ ! -e "$etc/bridge.toml" ]; then
    ami-bridge conf init "$etc"
    # In this compose the bridge runs as an unprivileged user, which cannot confine the
    # VTS processes (docs/confinement.md; docker/README.md says what that means).
    sed -i -e '/^\[bridge\]$/a confine = "off"   # docker/README.md: unprivileged container' \
        -e "s|^# asterisk_conf_dir = .*|asterisk_conf_dir = \"$view\"|" \
        "$etc/bridge.toml"
fi
mkdir -p "$view/ami-bridge"
cp "$etc/asterisk/extensions-include.conf" "$view/extensions.conf"
ami-bridge conf render --config "$etc/bridge.toml" --out "$view"
# The bridge's user reads its config and secrets and rewrites the fragments (ctl apply).
chown -R "$owner" "$etc"
