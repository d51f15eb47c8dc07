#!/usr/bin/env bash
# One-time setup for building and running the images with podman on a Debian 12 machine that has
# no Docker engine and cannot reach a registry (see docs/containers.md). Run as root. Idempotent:
# every step is skipped when it is already done, so a second run takes a few seconds.
#
#   sudo container/setup-podman.sh
#
# Makes: the podman/buildah packages (+ docker-registry for push tests, wrk for benchmarks),
# /etc/containers/containers.conf, and a local Debian bookworm base image named
# localhost/pybase:bookworm, also tagged docker.io/library/python:3.11-slim so that
# `FROM python:3.11-slim` resolves without a pull.
set -euo pipefail

BASE_IMAGE=localhost/pybase:bookworm
BASE_ALIAS=docker.io/library/python:3.11-slim
PACKAGES=(podman buildah runc fuse-overlayfs slirp4netns uidmap debootstrap docker-registry wrk)
CONF=/etc/containers/containers.conf

log() { printf 'setup-podman: %s\n' "$*"; }

# Run a noisy command quietly; show its output only if it fails.
quietly() {
    local out
    out=$(mktemp)
    if ! "$@" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        echo "setup-podman: failed: $*" >&2
        return 1
    fi
    rm -f "$out"
}

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-podman: must run as root" >&2
    exit 1
fi

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "packages: already installed"
        return
    fi
    log "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly apt-get update -q
    quietly apt-get install -y -q "${missing[@]}"
    # The Debian docker-registry package starts a registry on :5000; push tests start their own.
    if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
}

write_conf() {
    # Podman's default ulimits cannot be raised on these machines (setrlimit: Operation not
    # permitted), and crun fails on this cgroup layout while runc works.
    local hard want
    hard=$(ulimit -Hn)
    want=$(cat <<CONF
[containers]
default_ulimits = ["nofile=${hard}:${hard}", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
)
    if [[ -f $CONF ]] && [[ "$(cat "$CONF")" == "$want" ]]; then
        log "containers.conf: up to date"
    else
        log "containers.conf: writing $CONF"
        mkdir -p "$(dirname "$CONF")"
        printf '%s\n' "$want" >"$CONF"
    fi
    podman info >/dev/null
}

make_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        log "base image: $BASE_IMAGE exists"
        return
    fi
    local mirror rootfs
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d)
    # Clean up the rootfs (and its /proc mount) however this function ends.
    trap 'umount "'"$rootfs"'/proc" 2>/dev/null || true; rm -rf "'"$rootfs"'"' EXIT

    log "base image: debootstrap bookworm from $mirror (about a minute)"
    quietly debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    # Outgoing HTTPS here is re-signed by a local CA; the image must trust it for pip to work.
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" \
        2>/dev/null || true
    mount -t proc proc "$rootfs/proc"
    log "base image: installing python3, python3-venv, ca-certificates"
    quietly chroot "$rootfs" /bin/sh -c 'apt-get update -q && apt-get install -y -q \
        --no-install-recommends python3 python3-venv python3-pip ca-certificates \
        && apt-get clean && rm -rf /var/lib/apt/lists/*'
    umount "$rootfs/proc"
    : >"$rootfs/etc/resolv.conf"
    log "base image: importing as $BASE_IMAGE"
    tar -C "$rootfs" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
}

tag_alias() {
    local base_id alias_id
    base_id=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE")
    alias_id=$(podman image inspect --format '{{.Id}}' "$BASE_ALIAS" 2>/dev/null || true)
    if [[ "$alias_id" == "$base_id" ]]; then
        log "base image: $BASE_ALIAS already points at it"
    else
        log "base image: tagging $BASE_ALIAS"
        podman tag "$BASE_IMAGE" "$BASE_ALIAS"
    fi
}

install_packages
write_conf
make_base_image
tag_alias
log "done"
