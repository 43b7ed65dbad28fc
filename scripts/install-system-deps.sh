#!/usr/bin/env bash
# Install the Debian packages canalflow's tests, demo and benchmarks need, only when missing,
# and make sure Debian's own mosquitto/influxdb/postgresql services are not left running on the
# default ports (1883, 8086, 5432): the test harness starts private instances on free loopback ports.
#
# Used by `make deps` and .ci/run.  Runs as root, or through sudo when available.
# Safe to run again: with everything present it installs nothing and needs no root.
# The system services are stopped (and disabled where systemd runs) when this script installed
# them or when CI=true; otherwise a broker already running on the machine is left alone.
set -euo pipefail

# binary-or-file to look for (an absolute path may be a glob) | Debian package that provides it
REQUIREMENTS=(
    "mosquitto|mosquitto"
    "influxd|influxdb"
    "/usr/lib/postgresql/*/bin/initdb|postgresql"  # the server, off PATH; a client alone has no initdb
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc|fonts-wqy-zenhei"
    "pdftoppm|poppler-utils"
    "openssl|openssl"
    "make|make"
    "chromium|chromium"  # the web tests' browser (Playwright drives Debian's binary)
)
SERVICES=(mosquitto influxdb postgresql)

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

have() {
    local what=$1 path
    if [[ $what == /* ]]; then
        for path in $what; do  # unquoted: a glob expands to what matches, or stays as written
            [[ -e $path ]] && return 0
        done
        return 1
    else
        command -v "$what" >/dev/null 2>&1 || [[ -x /usr/sbin/$what || -x /usr/bin/$what ]]
    fi
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        log "run this script as root, or install sudo"
        return 1
    fi
}

missing_packages() {
    local entry
    for entry in "${REQUIREMENTS[@]}"; do
        have "${entry%%|*}" || printf '%s\n' "${entry##*|}"
    done
    # python3 with venv + ensurepip (Debian splits them into python3-venv)
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        printf '%s\n' python3 python3-venv
    fi
}

# Keep package maintainer scripts from starting the services we are about to install, unless
# the machine already has a policy (Docker images ship one that denies every start).
install_packages() {
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        added_policy=1
    fi
    local status=0
    as_root apt-get update </dev/null || status=$?
    if [[ $status -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" </dev/null \
            || status=$?
    fi
    if [[ $added_policy -eq 1 ]]; then
        as_root rm -f "$policy" || true
    fi
    return "$status"
}

stop_pidfile() {
    local pidfile=$1 name=$2 pid
    [[ -r $pidfile ]] || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null || true) == "$name" ]]; then
        log "stopping system $name (pid $pid)"
        as_root kill "$pid" || true
    fi
}

# Best effort: systemd may be absent or not PID 1 (containers); every step may fail quietly.
stop_system_services() {
    local svc
    for svc in "${SERVICES[@]}"; do
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
        if command -v service >/dev/null 2>&1 && [[ -x /etc/init.d/$svc ]]; then
            as_root service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
    stop_pidfile /run/mosquitto/mosquitto.pid mosquitto
    stop_pidfile /var/run/influxdb/influxd.pid influxd
    local pidfile
    for pidfile in /run/postgresql/*.pid; do  # Debian's clusters (15-main.pid), not the tests' own servers
        stop_pidfile "$pidfile" postgres
    done
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

main() {
    mapfile -t packages < <(missing_packages | sort -u)
    local installed=0
    if [[ ${#packages[@]} -gt 0 ]]; then
        log "installing: ${packages[*]}"
        install_packages "${packages[@]}"
        installed=1
    else
        log "all system packages present"
    fi
    # On CI, or right after we installed them: on a developer's machine a system broker that
    # was already running may be theirs on purpose.
    if [[ $installed -eq 1 || ${CI:-} == true ]]; then
        stop_system_services
    fi
    local port
    for port in 1883 8086 5432; do
        if port_in_use "$port"; then
            log "note: something listens on 127.0.0.1:$port (a system service?); tests do not need it"
        fi
    done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
