# Asterisk 22 from Debian's packages (unstable: Debian 12 has no Asterisk 22), with
# Debian's stock configuration as the "existing deployment" plus the sandbox's trunks
# and phones; asterisk-entrypoint.sh adds ami-bridge to it at start from the files
# `ami-bridge conf init` wrote (the compose file's shared /etc/ami-bridge volume).
# Build from the repository root: docker build -f docker/asterisk.Dockerfile .
# Target `sipp`: the same base with SIPp (Debian's sip-tester) and the test scenarios.
# Not built in CI: these machines run no Docker engine (docker/README.md).
FROM debian:sid-slim AS base
# The unstable mirror's Release file can be past its Valid-Until date (as in
# scripts/provision-sandbox): accept it rather than fail the build.
RUN apt-get -o Acquire::Check-Valid-Until=false update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        asterisk asterisk-modules \
    && rm -rf /var/lib/apt/lists/*

FROM base AS sipp
RUN apt-get -o Acquire::Check-Valid-Until=false update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sip-tester \
    && rm -rf /var/lib/apt/lists/*
COPY tests/sipp/uac.xml tests/sipp/uas.xml /usr/share/ami-bridge/sipp/
ENTRYPOINT ["sipp"]

FROM base AS asterisk
# AMI on (loopback; the stock file has it off) with the include of manager.d/, and the
# demo trunks and phones (SIPp on 127.0.0.1:5071-5077, one network namespace).
COPY asterisk-conf/manager.conf asterisk-conf/pjsip.conf /etc/asterisk/
COPY docker/asterisk-entrypoint.sh /usr/local/sbin/asterisk-entrypoint
EXPOSE 5060/udp
ENTRYPOINT ["/usr/local/sbin/asterisk-entrypoint"]
