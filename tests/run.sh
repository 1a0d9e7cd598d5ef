#!/usr/bin/env bash
# tests/run.sh: the one test command of cnibox (CI runs it through .ci/run).
#
# Runs as root on a fresh Debian 12 box: installs what it needs if missing
# (Debian packages, the musl rustup target, rustfmt/clippy), then
#   fmt -> clippy -> musl release build (+ size) -> cargo test -> shell checks
# and prints a summary. Exits non-zero if any step failed.
#
# Env: CNIBOX_SKIP_APT=1 skips the package install (offline dev boxes).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)

TARGET=x86_64-unknown-linux-musl
BIN=$ROOT/target/$TARGET/release/cnibox
CARGO_TEST_TIMEOUT=${CARGO_TEST_TIMEOUT:-2400} # seconds
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
[ -d "$HOME/.cargo/bin" ] && export PATH=$HOME/.cargo/bin:$PATH
export CARGO_TERM_COLOR=never

# ------------------------------------------------------------------ helpers

section() { printf '\n==== %s ====\n' "$*"; }
log() { printf '[run.sh] %s\n' "$*"; }
fail() {
    printf '[run.sh] FAIL: %s\n' "$*" >&2
    return 1
}

STEPS=()
RESULTS=()
TIMES=()
FAILED=0

# step NAME CMD...: run CMD in a subshell with errexit on, record the result,
# carry on with the next step either way.
step() {
    local name=$1 rc t0
    shift
    section "$name"
    t0=$SECONDS
    set +e
    (
        set -euo pipefail
        "$@"
    )
    rc=$?
    set -e
    STEPS+=("$name")
    TIMES+=("$((SECONDS - t0))")
    if [ "$rc" -eq 0 ]; then
        RESULTS+=(PASS)
    else
        RESULTS+=("FAIL($rc)")
        FAILED=$((FAILED + 1))
        log "step '$name' failed with exit $rc"
    fi
    return 0
}

skip_step() {
    section "$1"
    log "skipped: $2"
    STEPS+=("$1")
    RESULTS+=("SKIP")
    TIMES+=(0)
}

step_passed() {
    local i
    for i in "${!STEPS[@]}"; do
        if [ "${STEPS[$i]}" = "$1" ]; then
            [ "${RESULTS[$i]}" = PASS ]
            return
        fi
    done
    return 1
}

# Namespaces our tests and install.sh create; anything left is a leak.
leftover_netns() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(cnbt-|cnibox-install-)' || true
}

# ------------------------------------------------------------------ setup

setup_packages() {
    # command or file that proves it is there -> Debian package
    local -a need=(
        "ip iproute2"
        "nft nftables"
        "iptables iptables"
        "/usr/lib/cni/loopback containernetworking-plugins"
        "jq jq"
        "dash dash"
        "busybox busybox-static"
        "file file"
        "shellcheck shellcheck"
        "qemu-system-x86_64 qemu-system-x86"
        "cpio cpio"
        "depmod kmod"
    )
    local entry probe pkg missing=()
    for entry in "${need[@]}"; do
        probe=${entry%% *}
        pkg=${entry#* }
        case $probe in
            /*) [ -e "$probe" ] || missing+=("$pkg") ;;
            *) command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg") ;;
        esac
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "Debian packages: all present"
    elif [ "${CNIBOX_SKIP_APT:-0}" = 1 ]; then
        log "CNIBOX_SKIP_APT=1: not installing ${missing[*]}"
    else
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

setup_rust() {
    command -v cargo >/dev/null || fail "cargo not found (need a rustup toolchain)"
    if command -v rustup >/dev/null; then
        rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
        local c
        for c in rustfmt clippy; do
            rustup component list --installed | grep -q "^$c" || rustup component add "$c"
        done
    fi
    rustc --version
    cargo --version
    cargo fmt --version
    cargo clippy --version
}

setup() {
    setup_packages
    setup_rust
    log "kernel $(uname -r), $(nproc) cores, uid $(id -u)"
    local stale
    stale=$(leftover_netns)
    if [ -n "$stale" ]; then
        log "deleting stale test namespaces: $(echo "$stale" | tr '\n' ' ')"
        echo "$stale" | xargs -r -n1 ip netns delete
    fi
}

# ------------------------------------------------------------------ steps

build_release() {
    cargo build --release --target "$TARGET"
    [ -x "$BIN" ] || fail "$BIN missing after build"
    log "binary: $BIN"
    log "size: $(stat -c %s "$BIN") bytes"
    local f
    f=$(file -b "$BIN")
    log "file: $f"
    case $f in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) fail "binary is not statically linked" ;;
    esac
}

cargo_tests() {
    export CNIBOX_BIN=$BIN
    export CNIBOX_REQUIRE_GO=1
    log "CNIBOX_BIN=$CNIBOX_BIN CNIBOX_REQUIRE_GO=$CNIBOX_REQUIRE_GO"
    timeout --foreground "$CARGO_TEST_TIMEOUT" cargo test --no-fail-fast
}

netns_leaks() {
    local left
    left=$(leftover_netns)
    if [ -n "$left" ]; then
        echo "$left" | xargs -r -n1 ip netns delete
        fail "tests left network namespaces behind: $(echo "$left" | tr '\n' ' ')"
    fi
    log "no leftover namespaces"
}

shell_lint() {
    dash -n install.sh
    busybox sh -n install.sh
    bash -n tests/run.sh
    bash -n .ci/run
    if command -v shellcheck >/dev/null; then
        shellcheck -s sh install.sh
        shellcheck -s bash tests/run.sh .ci/run
        log "shellcheck clean"
    else
        log "shellcheck not installed; lint skipped"
    fi
}

# Packaging (install.sh, cnibox install, release tarballs, image, .deb):
# tests/packaging.sh, one section per step. The image step is a SKIP with the
# reason when podman/buildah cannot run containers on this machine.
packaging_steps() {
    step packaging-deps tests/packaging.sh deps
    step packaging-lint tests/packaging.sh lint
    if ! step_passed build-musl-release; then
        local s
        for s in install-sh install-self release image deb; do
            skip_step "$s" "the musl release build failed"
        done
        return 0
    fi
    step install-sh tests/packaging.sh install
    step install-self tests/packaging.sh self-install
    step release tests/packaging.sh release
    local reason
    if reason=$(tests/packaging.sh --can image 2>&1); then
        step image tests/packaging.sh image
    else
        skip_step image "$reason"
    fi
    step deb tests/packaging.sh deb
}

# ------------------------------------------------------------------ main

START=$SECONDS
section "setup"
setup

step fmt cargo fmt --check
step clippy cargo clippy --all-targets -- -D warnings
step build-musl-release build_release
if step_passed build-musl-release; then
    step cargo-test cargo_tests
    step netns-leaks netns_leaks
else
    skip_step cargo-test "the musl release build failed"
    skip_step netns-leaks "the musl release build failed"
fi
step shell-lint shell_lint
packaging_steps
# Full-kernel VM lane (tests/vm): the integration and unit tests on Debian's
# cloud kernel under qemu (dummy, vlan, ipvlan, vrf, bridge VLAN filtering).
if [ "${CNIBOX_SKIP_VM:-0}" = 1 ]; then
    skip_step vm-lane "CNIBOX_SKIP_VM=1"
elif step_passed build-musl-release; then
    step vm-lane tests/vm/run-vm.sh
else
    skip_step vm-lane "the musl release build failed"
fi

section "summary"
for i in "${!STEPS[@]}"; do
    printf '  %-20s %-9s %5ss\n' "${STEPS[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}"
done
[ -x "$BIN" ] && printf '  binary size: %s bytes\n' "$(stat -c %s "$BIN")"
printf '  total time: %ss\n' "$((SECONDS - START))"
if [ "$FAILED" -gt 0 ]; then
    printf 'SUMMARY: %d of %d steps FAILED\n' "$FAILED" "${#STEPS[@]}"
    exit 1
fi
printf 'SUMMARY: all %d steps passed\n' "${#STEPS[@]}"
