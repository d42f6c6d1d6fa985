#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are installed; print their paths.
#
#   tests/infra/ensure-prometheus.sh
#
#   1. both on PATH: print their two paths, exit 0;
#   2. otherwise, as root with apt-get: install Debian's `prometheus` package (it ships both),
#      stop the service the package may have started (the tests start their own Prometheus
#      on a free port; nothing relies on a system-wide one on :9090), and check again;
#   3. otherwise: exit 1 with the one command to run.
#
# tests/observability/ fails (never skips) without these binaries and names this script.
set -euo pipefail

say() { echo "ensure-prometheus: $*" >&2; }
INSTALL_CMD="apt-get update && apt-get install -y --no-install-recommends prometheus"

found() {
    local p t
    p=$(command -v prometheus 2>/dev/null) || return 1
    t=$(command -v promtool 2>/dev/null) || return 1
    echo "$p"
    echo "$t"
}

if found; then exit 0; fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "prometheus/promtool missing; installing Debian's prometheus package"
    export DEBIAN_FRONTEND=noninteractive
    # The package's postinst starts a service; never let it block on a prompt.
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # Stop whatever the package started: by service manager when there is one, else the
    # daemon the init script launched (its pid file), never by a name pattern.
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl stop prometheus >/dev/null 2>&1 || true
        systemctl disable prometheus >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service prometheus stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
    if found; then exit 0; fi
    say "installed the prometheus package but prometheus/promtool are still not on PATH"
    exit 1
fi

say "prometheus and promtool are required (tests/observability). Install them with:"
say "  $INSTALL_CMD"
exit 1
