#!/usr/bin/env bash
# Make sure the benchmark's load generator and reference proxy are installed: wrk and nginx,
# both from Debian's packages.
#
#   tests/performance/ensure-tools.sh [wrk] [nginx]      (both when no argument is given)
#
#   1. all on PATH (nginx also in /usr/sbin): exit 0;
#   2. otherwise, as root with apt-get: install the missing packages, stop any nginx service the
#      package may have started (the bench runs its own nginx on 127.0.0.1 with its own config;
#      nothing relies on a system-wide one on port 80), and check again;
#   3. otherwise: exit 1 with the one command to run.
#
# `make bench` calls this first; the bench never swaps in another tool behind your back
# (`make bench LOAD=aio` names the slower asyncio generator explicitly, and then needs only nginx).
set -euo pipefail

say() { echo "ensure-tools: $*" >&2; }

wanted=("$@")
if [[ ${#wanted[@]} -eq 0 ]]; then wanted=(wrk nginx); fi

missing=()
for tool in "${wanted[@]}"; do
    case $tool in
        wrk | nginx) ;;
        *) say "unknown tool $tool (wrk or nginx)"; exit 2 ;;
    esac
    PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi

INSTALL_CMD="apt-get update && apt-get install -y ${missing[*]}"

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "${missing[*]} missing; installing Debian's package(s)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" nginx "* ]]; then
        # Stop and disable whatever the package started, by service manager, never by name.
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            systemctl stop nginx >/dev/null 2>&1 || true
            systemctl disable nginx >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1; then
            service nginx stop >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d nginx disable >/dev/null 2>&1 || true
        fi
    fi
    still=()
    for tool in "${missing[@]}"; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || still+=("$tool")
    done
    if [[ ${#still[@]} -eq 0 ]]; then exit 0; fi
    say "installed, but ${still[*]} still not found"
    exit 1
fi

say "make bench needs ${missing[*]} (Debian packages). Install with:"
say "  $INSTALL_CMD"
exit 1
