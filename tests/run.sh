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

# check_dir DIR: cnibox in DIR is the built binary, every --list applet is a
# relative symlink to it, and no temp files are left behind.
check_dir() {
    local dir=$1 a n=0
    cmp -s "$BIN" "$dir/cnibox" || fail "$dir/cnibox differs from $BIN"
    [ -x "$dir/cnibox" ] || fail "$dir/cnibox is not executable"
    for a in $("$BIN" --list); do
        [ -L "$dir/$a" ] || fail "$dir/$a is not a symlink"
        [ "$(readlink "$dir/$a")" = cnibox ] || fail "$dir/$a -> $(readlink "$dir/$a"), want cnibox"
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || fail "cnibox --list printed no applets"
    if find "$dir" -maxdepth 1 -name '.*' ! -name . | grep -q .; then
        fail "temp files left in $dir: $(find "$dir" -maxdepth 1 -name '.*' ! -name .)"
    fi
    log "$dir: cnibox + $n applet links ok"
}

install_checks() {
    local tmp
    tmp=$(mktemp -d /tmp/cnibox-run.XXXXXX)
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT

    log "first install (checkout: build path) under dash, with the loopback proof run"
    DESTDIR=$tmp/stage dash ./install.sh --bin-dir /opt/cni/bin >"$tmp/out1" 2>"$tmp/err1" || {
        cat "$tmp/err1"
        fail "install.sh (first run) failed"
    }
    cat "$tmp/err1"
    log "ADD result on stdout:"
    cat "$tmp/out1"
    jq -e '.cniVersion == "1.1.0"' "$tmp/out1" >/dev/null ||
        fail "ADD result on stdout is not a cniVersion 1.1.0 result"
    grep -q '^\[INFO\] installed into .* 0 updated, 0 unchanged' "$tmp/err1" ||
        fail "first run into an empty dir should only report new files"
    check_dir "$tmp/stage/opt/cni/bin"

    log "second install under busybox sh: must change nothing"
    DESTDIR=$tmp/stage busybox sh ./install.sh --bin-dir /opt/cni/bin >/dev/null 2>"$tmp/err2" || {
        cat "$tmp/err2"
        fail "install.sh (second run) failed"
    }
    cat "$tmp/err2"
    grep -q '^\[INFO\] installed into .*: 0 new, 0 updated, [1-9][0-9]* unchanged' "$tmp/err2" ||
        fail "second run was not a no-op"
    check_dir "$tmp/stage/opt/cni/bin"

    log "upgrade from a release-tarball layout (prebuilt cnibox next to install.sh)"
    local rel=$tmp/release dest=$tmp/upgrade a
    local -a list want
    mapfile -t list < <("$BIN" --list)
    mkdir -p "$rel" "$dest/some-dir"
    cp install.sh "$rel/"
    cp "$BIN" "$rel/cnibox"
    printf '#!/bin/sh\necho "cnibox 0.0.0-old"\n' >"$dest/cnibox"
    chmod 0755 "$dest/cnibox"
    want=(cnibox)
    # What an upgrade finds where links go: a foreign file, a dangling link,
    # a link to a directory (mv must not move into it).
    if [ "${#list[@]}" -ge 1 ]; then
        echo "foreign plugin" >"$dest/${list[0]}"
        want+=("${list[0]}")
    fi
    if [ "${#list[@]}" -ge 2 ]; then
        ln -s "/nonexistent/${list[1]}" "$dest/${list[1]}"
        want+=("${list[1]}")
    fi
    if [ "${#list[@]}" -ge 3 ]; then
        ln -s some-dir "$dest/${list[2]}"
        want+=("${list[2]}")
    fi
    busybox sh "$rel/install.sh" --bin-dir "$dest" --no-verify-run 2>"$tmp/err3" || {
        cat "$tmp/err3"
        fail "install.sh (upgrade) failed"
    }
    cat "$tmp/err3"
    grep -q '^\[INFO\] using prebuilt binary' "$tmp/err3" || fail "prebuilt binary not used"
    local updated
    updated=" $(sed -n 's/^\[INFO\]   updated://p' "$tmp/err3") "
    for a in "${want[@]}"; do
        case $updated in
            *" $a "*) ;;
            *) fail "upgrade should report $a as updated (got:$updated)" ;;
        esac
    done
    [ -z "$(ls -A "$dest/some-dir")" ] || fail "install moved something into a linked directory"
    rm -rf "$dest/some-dir"
    check_dir "$dest"

    log "usage errors exit 2"
    local rc=0
    dash ./install.sh --no-such-option 2>/dev/null || rc=$?
    [ "$rc" -eq 2 ] || fail "unknown option: exit $rc, want 2"
    rc=0
    dash ./install.sh --bin-dir 2>/dev/null || rc=$?
    [ "$rc" -eq 2 ] || fail "--bin-dir without argument: exit $rc, want 2"
    dash ./install.sh --help | grep -q 'Exit codes' || fail "--help does not document exit codes"

    [ -z "$(leftover_netns)" ] || fail "install.sh left a namespace behind"
    log "install.sh checks passed"
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
if step_passed build-musl-release; then
    step install-sh install_checks
else
    skip_step install-sh "the musl release build failed"
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
