#!/usr/bin/env bash
# "A && B || fail" is the idiom here (fail exits); ls lists test dirs of plain names.
# shellcheck disable=SC2015,SC2012
# tests/packaging.sh: the packaging tests of cnibox (install.sh, `cnibox
# install`, release tarballs incl. arm64 under qemu, the FROM-scratch image
# with buildah/podman, the Debian package). tests/run.sh calls one section per
# step; run it by hand as root on Debian 12:
#
#   tests/packaging.sh deps          install what the sections need (apt, rustup)
#   tests/packaging.sh lint          shellcheck/dash/busybox syntax, manifests
#   tests/packaging.sh install       the install.sh matrix in temp dirs
#   tests/packaging.sh self-install  `cnibox install DIR` (same placement)
#   tests/packaging.sh release       build-release.sh: tarballs, checksums, arm64
#   tests/packaging.sh image         Containerfile: buildah build, podman run
#   tests/packaging.sh deb           the .deb: dpkg-deb -c/-I, install/remove
#   tests/packaging.sh all           every section above
#   tests/packaging.sh --can image   exit 0 if podman/buildah work here, else
#                                    print why not and exit 1 (run.sh: SKIP)
#
# Env: CNIBOX_BIN (default target/x86_64-unknown-linux-musl/release/cnibox,
# which must be built already), CNIBOX_SKIP_APT=1 (no apt-get).
# Every check fails the section with "FAIL: ..." and exit 1. podman and
# buildah only ever see a private containers.conf, storage.conf and storage
# in a temp dir (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, --root/--runroot).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
BIN=${CNIBOX_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/cnibox}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
WORK=$ROOT/target/packaging-test # release output shared by release/image/deb
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
[ -d "$HOME/.cargo/bin" ] && export PATH=$HOME/.cargo/bin:$PATH
VERSION=$(sed -n '/^\[package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
GO_DIR=/usr/lib/cni

log() { printf '[packaging] %s\n' "$*"; }
fail() {
    printf '[packaging] FAIL: %s\n' "$*" >&2
    exit 1
}

TMP=
NETNS=
PODMAN_OK=0
cleanup() {
    local rc=$?
    set +e
    [ -n "$NETNS" ] && ip netns delete "$NETNS" 2>/dev/null
    if [ "$PODMAN_OK" = 1 ]; then
        podman_ rm -a -f >/dev/null 2>&1
    fi
    [ -n "$TMP" ] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
new_tmp() {
    [ -n "$TMP" ] || TMP=$(mktemp -d /tmp/cnibox-pkg.XXXXXX)
}

# ------------------------------------------------------------------ helpers

need_bin() {
    [ -x "$BIN" ] || fail "$BIN missing: build it first (cargo build --release --target x86_64-unknown-linux-musl)"
    mapfile -t APPLETS < <("$BIN" --list)
    [ "${#APPLETS[@]}" -gt 0 ] || fail "$BIN --list printed nothing"
}

# run WANT_RC CMD...: run CMD with stdout/stderr in $TMP/out, $TMP/err; fail
# (showing stderr) unless it exits WANT_RC.
run() {
    local want=$1 rc=0
    shift
    "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    if [ "$rc" != "$want" ]; then
        sed 's/^/    | /' "$TMP/err" >&2
        fail "exit $rc, want $want: $*"
    fi
}

# summary_is COUNTS: the last run's stderr has "installed into ...: COUNTS".
summary_is() {
    grep -q "^\[INFO\] installed into .*: $1\$" "$TMP/err" || {
        sed 's/^/    | /' "$TMP/err" >&2
        fail "summary is not '$1'"
    }
}

# listed LABEL NAME: the last summary lists NAME under LABEL.
listed() {
    local line
    line=" $(sed -n "s/^\[INFO\]   $1://p" "$TMP/err") "
    case $line in
        *" $2 "*) ;;
        *) fail "summary should list $2 under '$1' (got:$line)" ;;
    esac
}

inode() { stat -c %i "$1"; }

# snapshot DIR: inode, mode, size, mtime and link target of every entry.
snapshot() {
    find "$1" -mindepth 1 -maxdepth 1 -printf '%i %M %s %T@ %f -> %l\n' | LC_ALL=C sort
}

# check_layout DIR MODE [APPLET...]: DIR/cnibox is $BIN; each applet (default
# all) is a relative symlink to it (MODE symlink) or a hard link/copy of it
# (MODE copy); a manifest is there; no temp files are left.
check_layout() {
    local dir=$1 mode=$2 a
    shift 2
    local -a names=("$@")
    [ "${#names[@]}" -gt 0 ] || names=("${APPLETS[@]}")
    cmp -s "$BIN" "$dir/cnibox" || fail "$dir/cnibox differs from $BIN"
    [ -x "$dir/cnibox" ] && [ ! -L "$dir/cnibox" ] || fail "$dir/cnibox is not an executable file"
    for a in "${names[@]}"; do
        if [ "$mode" = symlink ]; then
            [ -L "$dir/$a" ] || fail "$dir/$a is not a symlink"
            [ "$(readlink "$dir/$a")" = cnibox ] || fail "$dir/$a -> $(readlink "$dir/$a"), want cnibox"
        else
            [ ! -L "$dir/$a" ] && [ -x "$dir/$a" ] || fail "$dir/$a is not an executable file"
            cmp -s "$BIN" "$dir/$a" || fail "$dir/$a is not a copy of cnibox"
        fi
    done
    [ -f "$dir/.cnibox.manifest" ] || fail "no $dir/.cnibox.manifest"
    grep -qx "file cnibox" "$dir/.cnibox.manifest" || fail "manifest lacks cnibox"
    local left
    left=$(find "$dir" -maxdepth 1 -name '.*' ! -name . ! -name .cnibox.manifest)
    [ -z "$left" ] || fail "temp files left in $dir: $left"
}

# a release-like dir: install.sh with a prebuilt cnibox next to it.
make_rel() {
    local rel=$1
    mkdir -p "$rel"
    cp install.sh "$rel/"
    cp "$BIN" "$rel/cnibox"
    (cd "$rel" && sha256sum cnibox install.sh >SHA256SUMS)
}

# go_copy DIR: Debian's Go plugins copied into DIR (the "over Go plugins" case).
go_copy() {
    [ -x "$GO_DIR/loopback" ] || fail "$GO_DIR/loopback missing (apt-get install containernetworking-plugins)"
    mkdir -p "$1"
    cp -p "$GO_DIR"/* "$1/"
}

# same_as_go DIR: DIR holds exactly Debian's Go plugins again, byte for byte.
same_as_go() {
    diff <(ls -A "$1") <(ls -A "$GO_DIR") >&2 || fail "$1 does not hold exactly the Go plugins"
    local f
    for f in "$GO_DIR"/*; do
        cmp -s "$f" "$1/${f##*/}" || fail "$1/${f##*/} differs from $f"
    done
}

in_applets() {
    local a
    for a in "${APPLETS[@]}"; do [ "$a" = "$1" ] && return 0; done
    return 1
}

# ------------------------------------------------------------------ deps

deps() {
    local -a need=(
        "qemu-aarch64-static qemu-user-static"
        "podman podman"
        "buildah buildah"
        "runc runc"
        "dpkg-deb dpkg"
        "busybox busybox-static"
        "dash dash"
        "shellcheck shellcheck"
        "file file"
        "ip iproute2"
        "python3 python3-yaml"
        "jq jq"
        "/usr/lib/cni/loopback containernetworking-plugins"
    )
    local entry probe pkg missing=()
    for entry in "${need[@]}"; do
        probe=${entry%% *}
        pkg=${entry#* }
        case $probe in
            /*) [ -e "$probe" ] || missing+=("$pkg") ;;
            python3) python3 -c 'import yaml' 2>/dev/null || missing+=("$pkg") ;;
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
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if command -v rustup >/dev/null; then
        rustup target list --installed | grep -qx aarch64-unknown-linux-musl ||
            rustup target add aarch64-unknown-linux-musl
    fi
}

# ------------------------------------------------------------------ lint

lint() {
    local f
    for f in install.sh packaging/build-release.sh packaging/deb/build-deb.sh; do
        dash -n "$f" || fail "dash -n $f"
        busybox sh -n "$f" || fail "busybox sh -n $f"
        shellcheck -s sh "$f" || fail "shellcheck $f"
    done
    bash -n tests/packaging.sh
    shellcheck -s bash tests/packaging.sh || fail "shellcheck tests/packaging.sh"
    log "shell scripts: POSIX syntax (dash, busybox) and shellcheck clean"

    grep -qx 'FROM scratch' packaging/Containerfile || fail "Containerfile is not FROM scratch"
    grep -qxF 'ENTRYPOINT ["/cnibox","install","/host/opt/cni/bin"]' packaging/Containerfile ||
        fail "Containerfile ENTRYPOINT is not /cnibox install /host/opt/cni/bin"
    python3 - packaging/daemonset.yaml <<'PY' || fail "packaging/daemonset.yaml"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert len(docs) == 1 and docs[0]["kind"] == "DaemonSet", "one DaemonSet"
spec = docs[0]["spec"]["template"]["spec"]
c = spec["containers"][0]
vols = {v["name"]: v for v in spec["volumes"]}
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
assert "/host/opt/cni/bin" in mounts, "mounts the host dir at /host/opt/cni/bin"
assert vols[mounts["/host/opt/cni/bin"]]["hostPath"]["path"] == "/opt/cni/bin", "hostPath /opt/cni/bin"
assert c.get("args") == ["--sleep"], "main container sleeps after installing"
assert "command" not in c, "keeps the image entrypoint"
assert docs[0]["spec"]["selector"]["matchLabels"].items() <= docs[0]["spec"]["template"]["metadata"]["labels"].items()
print("[packaging] daemonset.yaml: mount path, hostPath, args, selector ok")
PY
    [ "$(head -c 200 LICENSE | tr -s ' \n' ' ')" = "$(head -c 200 /usr/share/common-licenses/Apache-2.0 | tr -s ' \n' ' ')" ] ||
        fail "LICENSE is not the Apache-2.0 text"
    grep -q '^license = "Apache-2.0"' Cargo.toml || fail "Cargo.toml license is not Apache-2.0"
    log "Containerfile, daemonset.yaml, LICENSE ok"
}

# ------------------------------------------------------------------ install.sh

install_matrix() {
    need_bin
    new_tmp
    local t=$TMP/install a rc first=${APPLETS[0]} n=${#APPLETS[@]}
    mkdir -p "$t"
    make_rel "$t/rel"

    log "fresh: from the checkout (build path) under dash, DESTDIR, with the proof run"
    run 0 env DESTDIR="$t/stage" dash ./install.sh --bin-dir /opt/cni/bin
    jq -e '.cniVersion == "1.1.0" and .interfaces[0].name == "lo"' "$TMP/out" >/dev/null ||
        fail "the proof run's ADD result on stdout is not a 1.1.0 loopback result: $(cat "$TMP/out")"
    grep -q '^\[INFO\] verified: ' "$TMP/err" || fail "no proof run"
    summary_is "$((n + 1)) new, 0 updated, 0 unchanged, 0 replaced, 0 skipped"
    check_layout "$t/stage/opt/cni/bin" symlink
    local dir=$t/stage/opt/cni/bin

    log "re-run under busybox sh: a no-op (same inodes, mtimes, links)"
    local before
    before=$(snapshot "$dir")
    run 0 env DESTDIR="$t/stage" busybox sh ./install.sh --bin-dir /opt/cni/bin --no-verify-run
    summary_is "0 new, 0 updated, $((n + 1)) unchanged, 0 replaced, 0 skipped"
    [ "$before" = "$(snapshot "$dir")" ] || fail "re-run changed $dir"
    [ ! -s "$TMP/out" ] || fail "install.sh printed on stdout without a proof run"

    log "upgrade over a previous version while it runs (rename, no 'text file busy')"
    dir=$t/upgrade
    mkdir -p "$dir/some-dir"
    cp /bin/sleep "$dir/cnibox" # an "old cnibox" that is a real ELF binary
    for a in "${APPLETS[@]}"; do ln -s cnibox "$dir/$a"; done
    printf 'file cnibox\n' >"$dir/.cnibox.manifest"
    "$dir/cnibox" 30 &
    local sleeper=$! old_inode
    old_inode=$(inode "$dir/cnibox")
    # What an upgrade also finds where links go: a dangling link and a link
    # to a directory (mv must not move into it); both foreign.
    local extra=()
    if [ "$n" -ge 2 ]; then
        rm "$dir/${APPLETS[1]}" && ln -s "/nonexistent/${APPLETS[1]}" "$dir/${APPLETS[1]}"
        extra+=("${APPLETS[1]}")
    fi
    if [ "$n" -ge 3 ]; then
        rm "$dir/${APPLETS[2]}" && ln -s some-dir "$dir/${APPLETS[2]}"
        extra+=("${APPLETS[2]}")
    fi
    run 0 busybox sh "$t/rel/install.sh" --bin-dir "$dir" --no-verify-run
    kill -0 "$sleeper" 2>/dev/null || fail "the running old binary died during the upgrade"
    kill "$sleeper" && wait "$sleeper" 2>/dev/null || true
    grep -q '^\[INFO\] using prebuilt binary' "$TMP/err" || fail "prebuilt binary not used"
    listed updated cnibox
    [ "$(inode "$dir/cnibox")" != "$old_inode" ] || fail "cnibox was rewritten in place, not renamed"
    for a in "${extra[@]}"; do listed "replaced (kept as .orig)" "$a"; done
    [ -z "$(ls -A "$dir/some-dir")" ] || fail "install moved something into a linked directory"
    rm -rf "$dir/some-dir"
    for a in "${extra[@]}"; do rm -f "$dir/$a.orig"; done
    check_layout "$dir" symlink
    grep -q '^version ' "$dir/.cnibox.manifest" || fail "manifest not rewritten"

    log "over Go plugins: replaced, kept as NAME.orig, other plugins untouched; uninstall restores all"
    dir=$t/go
    go_copy "$dir"
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --no-verify-run
    local replaced=0
    for a in "${APPLETS[@]}"; do
        if [ -e "$GO_DIR/$a" ]; then
            cmp -s "$GO_DIR/$a" "$dir/$a.orig" || fail "$a.orig is not the Go $a"
            grep -qx "backup $a" "$dir/.cnibox.manifest" || fail "manifest lacks backup $a"
            listed "replaced (kept as .orig)" "$a"
            replaced=$((replaced + 1))
        fi
    done
    [ "$replaced" -gt 0 ] || fail "no applet name clashed with a Go plugin"
    check_layout "$dir" symlink
    for a in "$GO_DIR"/*; do
        in_applets "${a##*/}" || cmp -s "$a" "$dir/${a##*/}" || fail "Go ${a##*/} was touched"
    done
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --no-verify-run
    summary_is "0 new, 0 updated, $((n + 1)) unchanged, 0 replaced, 0 skipped"
    run 0 busybox sh install.sh --uninstall --bin-dir "$dir"
    grep -q "^\[INFO\] uninstalled from $dir: $((n - replaced + 1)) removed, $replaced restored from .orig, 0 left alone" "$TMP/err" ||
        fail "uninstall summary: $(grep uninstalled "$TMP/err")"
    same_as_go "$dir"

    log "--no-backup over Go plugins: no .orig; uninstall then leaves the name empty"
    dir=$t/nobackup
    go_copy "$dir"
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --no-backup --no-verify-run
    [ -z "$(find "$dir" -name '*.orig')" ] || fail "--no-backup kept .orig files"
    listed replaced "$first"
    check_layout "$dir" symlink
    run 0 dash install.sh --uninstall --bin-dir "$dir"
    [ ! -e "$dir/$first" ] || [ ! -e "$GO_DIR/$first" ] || fail "$first is still there after uninstall"
    [ ! -e "$dir/cnibox" ] || fail "cnibox still there"

    log "--skip-existing: a foreign $first stays byte for byte, nothing kept as .orig"
    dir=$t/skip
    mkdir -p "$dir"
    printf '#!/bin/sh\necho vendor plugin\n' >"$dir/$first"
    chmod 0755 "$dir/$first"
    cp -p "$dir/$first" "$t/vendor"
    run 0 busybox sh "$t/rel/install.sh" --bin-dir "$dir" --skip-existing --no-verify-run
    summary_is "$n new, 0 updated, 0 unchanged, 0 replaced, 1 skipped"
    listed skipped "$first"
    cmp -s "$t/vendor" "$dir/$first" || fail "--skip-existing changed $first"
    [ ! -L "$dir/$first" ] || fail "--skip-existing replaced $first"
    [ ! -e "$dir/$first.orig" ] || fail "--skip-existing made a backup"
    check_layout "$dir" symlink "${APPLETS[@]:1}"
    run 0 dash install.sh --uninstall --bin-dir "$dir"
    [ "$(ls -A "$dir")" = "$first" ] || fail "uninstall after --skip-existing left: $(ls -A "$dir")"
    cmp -s "$t/vendor" "$dir/$first" || fail "uninstall touched the vendor $first"

    log "--only $first: only that applet (and the binary)"
    dir=$t/only
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --only "$first" --no-verify-run
    summary_is "2 new, 0 updated, 0 unchanged, 0 replaced, 0 skipped"
    check_layout "$dir" symlink "$first"
    for a in "${APPLETS[@]:1}"; do [ ! -e "$dir/$a" ] || fail "--only installed $a"; done
    run 2 dash "$t/rel/install.sh" --bin-dir "$dir" --only "$first,no-such-plugin" --no-verify-run
    grep -q "no-such-plugin" "$TMP/err" || fail "--only error does not name the bad applet"
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --only "$first" # with the proof run
    jq -e '.cniVersion == "1.1.0"' "$TMP/out" >/dev/null || fail "--only proof run printed no result"

    log "--copy: hard links; re-run no-op; symlinks -> hard links; uninstall removes them"
    dir=$t/copy
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --copy
    check_layout "$dir" copy
    for a in "${APPLETS[@]}"; do
        [ "$(inode "$dir/$a")" = "$(inode "$dir/cnibox")" ] || fail "--copy: $a is not a hard link"
    done
    grep -qx 'mode copy' "$dir/.cnibox.manifest" || fail "manifest lacks mode copy"
    before=$(snapshot "$dir")
    run 0 busybox sh "$t/rel/install.sh" --bin-dir "$dir" --copy --no-verify-run
    summary_is "0 new, 0 updated, $((n + 1)) unchanged, 0 replaced, 0 skipped"
    [ "$before" = "$(snapshot "$dir")" ] || fail "--copy re-run changed $dir"
    dir=$t/copy2
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --no-verify-run
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --copy --no-verify-run
    summary_is "0 new, $n updated, 1 unchanged, 0 replaced, 0 skipped"
    check_layout "$dir" copy

    log "--copy upgrade: hard links of the previous binary are cnibox's, replaced without .orig"
    dir=$t/copy-up
    mkdir -p "$dir"
    cp /bin/true "$dir/cnibox"
    for a in "${APPLETS[@]}"; do ln "$dir/cnibox" "$dir/$a"; done
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --copy --no-verify-run
    summary_is "0 new, $((n + 1)) updated, 0 unchanged, 0 replaced, 0 skipped"
    [ -z "$(find "$dir" -name '*.orig')" ] || fail "old hard links were taken as foreign"
    check_layout "$dir" copy
    for a in "${APPLETS[@]}"; do
        [ "$(inode "$dir/$a")" = "$(inode "$dir/cnibox")" ] || fail "upgrade left $a on the old inode"
    done

    log "--copy where hard links fail: copies (ln without -s fails), uninstall finds them by content"
    dir=$t/copy-fallback
    mkdir -p "$t/noln"
    # shellcheck disable=SC2016 # $1 and $@ belong to the fake ln
    printf '#!/bin/sh\n[ "$1" = -s ] && exec /bin/ln "$@"\necho "ln: hard links refused (test)" >&2\nexit 1\n' >"$t/noln/ln"
    chmod 0755 "$t/noln/ln"
    run 0 env PATH="$t/noln:$PATH" dash "$t/rel/install.sh" --bin-dir "$dir" --copy --no-verify-run
    grep -q 'hard link to .* impossible here; copying' "$TMP/err" || fail "no copy fallback message"
    check_layout "$dir" copy
    for a in "${APPLETS[@]}"; do
        [ "$(inode "$dir/$a")" != "$(inode "$dir/cnibox")" ] || fail "$a should be a copy"
    done
    run 0 dash install.sh --uninstall --bin-dir "$dir"
    [ -z "$(ls -A "$dir")" ] || fail "uninstall left copies: $(ls -A "$dir")"

    log "--uninstall: removes cnibox and what points at it, nothing else"
    dir=$t/uninst
    mkdir -p "$dir"
    echo foreign >"$dir/zzz-foreign"
    ln -s /bin/true "$dir/other-link"
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --no-verify-run
    ln -s ./cnibox "$dir/by-hand-link" # a link made by hand to cnibox: also cnibox's
    local changed=
    if [ "$n" -ge 2 ]; then
        changed=${APPLETS[1]} # replaced by the admin after the install
        rm "$dir/$changed" && echo "admin's own" >"$dir/$changed"
    fi
    run 0 busybox sh install.sh --uninstall --bin-dir "$dir"
    local want="other-link zzz-foreign"
    [ -n "$changed" ] && want=$(printf '%s\n' other-link zzz-foreign "$changed" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
    [ "$(ls -A "$dir" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')" = "$want" ] ||
        fail "after uninstall $dir holds '$(ls -A "$dir" | tr '\n' ' ')', want '$want'"
    [ "$(cat "$dir/zzz-foreign")" = foreign ] && [ "$(readlink "$dir/other-link")" = /bin/true ] ||
        fail "uninstall changed a foreign file"
    if [ -n "$changed" ]; then
        grep -q "$changed was installed by cnibox but has changed since; left alone" "$TMP/err" ||
            fail "no warning about the changed $changed"
    fi
    run 4 dash install.sh --uninstall --bin-dir "$dir"
    grep -q 'no cnibox installation' "$TMP/err" || fail "second uninstall: wrong message"

    log "--uninstall of an unpacked tarball (no manifest)"
    dir=$t/unpacked
    mkdir -p "$dir"
    cp "$BIN" "$dir/cnibox"
    for a in "${APPLETS[@]}"; do ln -s cnibox "$dir/$a"; done
    echo keep >"$dir/README.md"
    run 0 dash install.sh --uninstall --bin-dir "$dir"
    [ "$(ls -A "$dir")" = README.md ] || fail "uninstall of an unpacked tarball left: $(ls -A "$dir")"

    log "--verify: SHA256SUMS next to the binary, checked before it runs"
    dir=$t/verify
    run 0 dash "$t/rel/install.sh" --bin-dir "$dir" --verify --no-verify-run
    grep -q "^\[INFO\] verified .*cnibox against .*SHA256SUMS" "$TMP/err" || fail "--verify said nothing"
    check_layout "$dir" symlink
    make_rel "$t/bad"
    printf '#!/bin/sh\ntouch %s/ran\necho cnibox 9.9.9\n' "$t/bad" >"$t/bad/cnibox" # corrupted/tampered
    run 6 dash "$t/bad/install.sh" --bin-dir "$t/bad-dest" --verify --no-verify-run
    grep -q 'does not match' "$TMP/err" || fail "--verify: no mismatch message"
    [ ! -e "$t/bad/ran" ] || fail "--verify ran the binary before checking it"
    [ ! -e "$t/bad-dest" ] || fail "--verify failure still created/installed into the bin dir"
    cp "$BIN" "$t/bad/cnibox"
    printf '\0' >>"$t/bad/cnibox" # one byte appended
    run 6 busybox sh "$t/bad/install.sh" --bin-dir "$t/bad-dest" --verify --no-verify-run
    rm "$t/bad/SHA256SUMS"
    run 6 dash "$t/bad/install.sh" --bin-dir "$t/bad-dest" --verify --no-verify-run
    grep -q 'no SHA256SUMS' "$TMP/err" || fail "--verify without SHA256SUMS: wrong message"
    run 6 dash ./install.sh --bin-dir "$t/bad-dest" --verify --no-verify-run
    [ ! -e "$t/bad-dest" ] || fail "a failed --verify installed something"

    log "usage errors exit 2; --help documents options and exit codes"
    run 2 dash ./install.sh --no-such-option
    run 2 dash ./install.sh --bin-dir
    run 2 dash ./install.sh --only
    run 2 dash ./install.sh --uninstall --copy
    run 2 dash ./install.sh stray-argument
    run 0 dash ./install.sh --help
    for a in --bin-dir --copy --only --skip-existing --no-backup --verify --uninstall --no-verify-run \
        DESTDIR 'Exit codes' '  6  --verify failed'; do
        grep -q -- "$a" "$TMP/out" || fail "--help does not mention $a"
    done
    rc=$(grep -c '^  [0-9]  ' "$TMP/out")
    [ "$rc" -ge 7 ] || fail "--help documents $rc exit codes, want 0-6"
    log "install.sh matrix passed"
}

# ------------------------------------------------------------------ cnibox install

self_install() {
    need_bin
    new_tmp
    local t=$TMP/self a n=${#APPLETS[@]} first=${APPLETS[0]} before
    mkdir -p "$t"
    make_rel "$t/rel"

    log "fresh: same files, links and manifest as install.sh; nothing on stdout"
    run 0 "$BIN" install "$t/a/bin"
    [ ! -s "$TMP/out" ] || fail "cnibox install wrote to stdout: $(cat "$TMP/out")"
    summary_is "$((n + 1)) new, 0 updated, 0 unchanged, 0 replaced, 0 skipped"
    check_layout "$t/a/bin" symlink
    run 0 dash "$t/rel/install.sh" --bin-dir "$t/b" --no-verify-run
    diff <(snapshot "$t/a/bin" | cut -d' ' -f2,3,5- | sort) <(snapshot "$t/b" | cut -d' ' -f2,3,5- | sort) >&2 ||
        fail "cnibox install and install.sh placed different files"
    cmp -s "$t/a/bin/.cnibox.manifest" "$t/b/.cnibox.manifest" || fail "manifests differ"

    log "re-run: no-op; install.sh after cnibox install: no-op too"
    before=$(snapshot "$t/a/bin")
    run 0 "$BIN" install "$t/a/bin"
    summary_is "0 new, 0 updated, $((n + 1)) unchanged, 0 replaced, 0 skipped"
    run 0 dash "$t/rel/install.sh" --bin-dir "$t/a/bin" --no-verify-run
    summary_is "0 new, 0 updated, $((n + 1)) unchanged, 0 replaced, 0 skipped"
    [ "$before" = "$(snapshot "$t/a/bin")" ] || fail "re-runs changed the dir"

    log "upgrade over a previous version (copy mode, hard links of the old binary)"
    local dir=$t/up
    mkdir -p "$dir"
    cp /bin/true "$dir/cnibox"
    for a in "${APPLETS[@]}"; do ln "$dir/cnibox" "$dir/$a"; done
    run 0 "$BIN" install --copy "$dir"
    summary_is "0 new, $((n + 1)) updated, 0 unchanged, 0 replaced, 0 skipped"
    check_layout "$dir" copy
    [ -z "$(find "$dir" -name '*.orig')" ] || fail "old hard links taken as foreign"
    run 0 "$BIN" install "$dir" # back to symlinks
    summary_is "0 new, $n updated, 1 unchanged, 0 replaced, 0 skipped"
    check_layout "$dir" symlink

    log "over Go plugins: NAME.orig kept; install.sh --uninstall restores exactly"
    dir=$t/go
    go_copy "$dir"
    run 0 "$BIN" install "$dir"
    for a in "${APPLETS[@]}"; do
        if [ -e "$GO_DIR/$a" ]; then
            cmp -s "$GO_DIR/$a" "$dir/$a.orig" || fail "$a.orig is not the Go $a"
            listed "replaced (kept as .orig)" "$a"
        fi
    done
    check_layout "$dir" symlink
    run 0 dash install.sh --uninstall --bin-dir "$dir"
    same_as_go "$dir"

    log "--skip-existing, --no-backup, --only"
    dir=$t/opts
    mkdir -p "$dir"
    echo vendor >"$dir/$first"
    run 0 "$BIN" install --skip-existing "$dir"
    listed skipped "$first"
    [ "$(cat "$dir/$first")" = vendor ] || fail "--skip-existing changed $first"
    run 0 "$BIN" install --no-backup "$dir"
    listed replaced "$first"
    [ ! -e "$dir/$first.orig" ] || fail "--no-backup kept $first.orig"
    check_layout "$dir" symlink
    dir=$t/only
    run 0 "$BIN" install --only "$first" "$dir"
    check_layout "$dir" symlink "$first"
    for a in "${APPLETS[@]:1}"; do [ ! -e "$dir/$a" ] || fail "--only installed $a"; done

    log "usage errors exit 2, help exits 0"
    run 2 "$BIN" install
    run 2 "$BIN" install --no-such-flag "$dir"
    run 2 "$BIN" install --only no-such-plugin "$dir"
    run 0 "$BIN" install --help
    grep -q 'Exit codes' "$TMP/out" || fail "cnibox install --help lacks exit codes"
    echo x >"$t/file"
    run 4 "$BIN" install "$t/file/bin"

    log "--sleep: installs, stays up, exits 0 on SIGTERM"
    dir=$t/sleep
    "$BIN" install --sleep "$dir" 2>"$t/sleep.err" &
    local pid=$! rc=0 _
    for _ in $(seq 50); do
        grep -q 'sleeping until' "$t/sleep.err" 2>/dev/null && break
        sleep 0.1
    done
    grep -q 'sleeping until' "$t/sleep.err" || fail "--sleep did not report sleeping"
    check_layout "$dir" symlink
    sleep 0.3
    kill -0 "$pid" || fail "--sleep exited on its own"
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    [ "$rc" = 0 ] || fail "--sleep exited $rc on SIGTERM, want 0"
    log "cnibox install passed"
}

# ------------------------------------------------------------------ release

# ensure_release: the dist dir exists (built by the release section, else a
# quick amd64-only build from the existing binary).
ensure_release() {
    if [ ! -f "$WORK/dist/cnibox-$VERSION-linux-amd64.tgz" ] ||
        [ "$WORK/dist/cnibox-$VERSION-linux-amd64.tgz" -ot "$BIN" ]; then
        log "no current release output in $WORK/dist; building amd64 only from $BIN"
        rm -rf "$WORK/dist"
        sh packaging/build-release.sh --arch amd64 --no-build --out "$WORK/dist"
    fi
    DIST=$WORK/dist
}

# qemu_matrix DIR: the arm64 applets under qemu-aarch64-static: about text,
# VERSION, and the bad-input matrix.
qemu_matrix() {
    local dir=$1 q out rc
    q=$(command -v qemu-aarch64-static) || fail "qemu-aarch64-static missing (qemu-user-static)"
    NETNS=cnbt-pkg-arm64-$$
    ip netns add "$NETNS"
    local ns=/run/netns/$NETNS
    out=$(env -i PATH="$PATH" "$q" "$dir/loopback" 2>&1 >/dev/null)
    case $out in
        "CNI loopback plugin $VERSION"*"CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"*) ;;
        *) fail "arm64 about text: $out" ;;
    esac
    out=$(env -i CNI_COMMAND=VERSION "$q" "$dir/loopback" </dev/null)
    jq -e '.cniVersion == "1.1.0" and (.supportedVersions | index("0.3.1"))' <<<"$out" >/dev/null ||
        fail "arm64 VERSION: $out"
    local good='{"cniVersion":"1.0.0","name":"bad-input","type":"loopback"}'
    local -a cases=(
        "4|missing CNI_PATH|CNI_COMMAND=ADD CNI_CONTAINERID=c CNI_NETNS=$ns CNI_IFNAME=eth0|$good"
        "4|only CNI_COMMAND|CNI_COMMAND=ADD|$good"
        "6|bad JSON|CNI_COMMAND=ADD CNI_CONTAINERID=c CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=/x|{not json"
        "7|no name|CNI_COMMAND=ADD CNI_CONTAINERID=c CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=/x|{\"cniVersion\":\"1.0.0\"}"
        "1|unknown version|CNI_COMMAND=ADD CNI_CONTAINERID=c CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=/x|{\"cniVersion\":\"9.9.9\",\"name\":\"n\"}"
        "1|CHECK on 0.3.1|CNI_COMMAND=CHECK CNI_CONTAINERID=c CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=/x|{\"cniVersion\":\"0.3.1\",\"name\":\"n\"}"
        "4|unknown command|CNI_COMMAND=FOO CNI_CONTAINERID=c CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=/x|$good"
    )
    local c code what envs stdin
    for c in "${cases[@]}"; do
        IFS='|' read -r code what envs stdin <<<"$c"
        rc=0
        # shellcheck disable=SC2086 # envs is a list of VAR=value words
        out=$(printf '%s' "$stdin" | env -i $envs "$q" "$dir/loopback") || rc=$?
        [ "$rc" = 1 ] || fail "arm64 $what: exit $rc, want 1 ($out)"
        [ "$(jq -r .code <<<"$out")" = "$code" ] || fail "arm64 $what: code $(jq -r .code <<<"$out"), want $code"
        log "  arm64 $what: exit 1, code $code"
    done
    ip netns delete "$NETNS"
    NETNS=
}

release() {
    need_bin
    new_tmp
    local t=$TMP/release arch tgz t0 secs a
    mkdir -p "$t"
    rm -rf "$WORK/dist"
    t0=$SECONDS
    sh packaging/build-release.sh --out "$WORK/dist"
    secs=$((SECONDS - t0))
    log "build-release.sh (amd64 + arm64 tarballs and .debs): ${secs}s"
    DIST=$WORK/dist
    mapfile -t want < <(printf '%s\n' cnibox install.sh README.md LICENSE SHA256SUMS "${APPLETS[@]}" | LC_ALL=C sort)

    for arch in amd64 arm64; do
        tgz=cnibox-$VERSION-linux-$arch.tgz
        [ -f "$DIST/$tgz" ] || fail "$tgz missing"
        (cd "$DIST" && sha256sum -c --quiet "$tgz.sha256") || fail "$tgz.sha256 does not check"
        log "$tgz: $(stat -c %s "$DIST/$tgz") bytes, sha256 ok"
        # Flat: no directory entries, no ./ prefix, root:root, links relative.
        tar -tzvf "$DIST/$tgz" >"$t/list"
        diff <(tar -tzf "$DIST/$tgz" | LC_ALL=C sort) <(printf '%s\n' "${want[@]}") >&2 ||
            fail "$tgz does not hold exactly: ${want[*]}"
        ! grep -q '^d' "$t/list" || fail "$tgz has directory entries"
        awk '$2 != "0/0" { exit 1 }' "$t/list" || fail "$tgz entries not owned by 0/0"
        for a in "${APPLETS[@]}"; do
            grep -q "^l.* $a -> cnibox\$" "$t/list" || fail "$tgz: $a is not a symlink to cnibox"
        done
        grep -q '^-rwxr-xr-x .* cnibox$' "$t/list" || fail "$tgz: cnibox not 0755"
        rm -rf "$t/x-$arch"
        mkdir -p "$t/x-$arch"
        tar -xzf "$DIST/$tgz" -C "$t/x-$arch"
        (cd "$t/x-$arch" && sha256sum -c --quiet SHA256SUMS) || fail "$tgz: SHA256SUMS inside does not check"
        cmp -s "$t/x-$arch/install.sh" install.sh || fail "$tgz: install.sh differs"
        cmp -s "$t/x-$arch/LICENSE" LICENSE || fail "$tgz: LICENSE differs"
    done
    cp "$DIST/cnibox-$VERSION-linux-amd64.tgz" "$t/tampered.tgz"
    printf 'x' >>"$t/tampered.tgz"
    ! (cd "$DIST" && sha256sum --quiet -c <(sed "s|cnibox-$VERSION-linux-amd64.tgz|$t/tampered.tgz|" "cnibox-$VERSION-linux-amd64.tgz.sha256")) >/dev/null 2>&1 ||
        fail "a tampered tarball passed its .sha256"

    log "amd64: the binary is the tested one; air-gapped install from the unpacked tarball"
    local x=$t/x-amd64
    cmp -s "$x/cnibox" "$BIN" || fail "amd64 tarball binary differs from $BIN"
    run 0 dash "$x/install.sh" --verify --bin-dir "$t/airgap"
    jq -e '.cniVersion == "1.1.0"' "$TMP/out" >/dev/null || fail "air-gapped install: no proof result"
    check_layout "$t/airgap" symlink
    log "amd64: tar -xzf over a dir of Go plugins works like upstream's tarball"
    go_copy "$t/tar-over-go"
    tar -xzf "$DIST/cnibox-$VERSION-linux-amd64.tgz" -C "$t/tar-over-go"
    [ "$(readlink "$t/tar-over-go/${APPLETS[0]}")" = cnibox ] || fail "tar -x did not put the link in"
    printf '' | env -i CNI_COMMAND=VERSION "$t/tar-over-go/${APPLETS[0]}" >/dev/null ||
        fail "${APPLETS[0]} from the unpacked tarball does not run"

    log "arm64: static aarch64 binary, same version and applets"
    x=$t/x-arm64
    file -b "$x/cnibox" | grep -q 'ARM aarch64.*statically linked' || fail "arm64 binary: $(file -b "$x/cnibox")"
    log "  arm64 binary: $(stat -c %s "$x/cnibox") bytes ($(file -b "$x/cnibox" | cut -d, -f1-2))"
    [ "$(qemu-aarch64-static "$x/cnibox" --version)" = "cnibox $VERSION" ] || fail "arm64 --version"
    diff <(qemu-aarch64-static "$x/cnibox" --list) <(printf '%s\n' "${APPLETS[@]}") >&2 ||
        fail "arm64 --list differs from amd64"
    qemu_matrix "$x"
    log "arm64: cnibox install under qemu places the arm64 binary itself"
    run 0 qemu-aarch64-static "$x/cnibox" install "$t/arm64-dir"
    cmp -s "$x/cnibox" "$t/arm64-dir/cnibox" || fail "arm64 cnibox install did not copy itself"
    for a in "${APPLETS[@]}"; do
        [ "$(readlink "$t/arm64-dir/$a")" = cnibox ] || fail "arm64 cnibox install: $a is not -> cnibox"
    done

    log "reproducible: a second build (no rebuild) gives the same tarball bytes"
    sh packaging/build-release.sh --arch amd64 --no-build --no-deb --out "$t/again" 2>/dev/null
    cmp -s "$t/again/cnibox-$VERSION-linux-amd64.tgz" "$DIST/cnibox-$VERSION-linux-amd64.tgz" ||
        fail "rebuilding gave a different tarball"
    log "release passed"
}

# ------------------------------------------------------------------ image

# podman_/buildah_ ARGS: with the private config and storage only.
podman_() { podman --root "$CROOT/storage" --runroot "$CROOT/run" --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"; }
buildah_() { buildah --root "$CROOT/storage" --runroot "$CROOT/run" --storage-driver vfs "$@"; }

container_setup() {
    new_tmp
    CROOT=$TMP/containers
    mkdir -p "$CROOT/storage" "$CROOT/run" "$CROOT/tmp"
    cat >"$CROOT/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$CROOT/events.log"
tmp_dir = "$CROOT/tmp"
EOF
    cat >"$CROOT/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$CROOT/storage"
runroot = "$CROOT/run"
EOF
    export CONTAINERS_CONF=$CROOT/containers.conf
    export CONTAINERS_STORAGE_CONF=$CROOT/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$CROOT/registries.conf
    printf 'unqualified-search-registries = []\n' >"$CROOT/registries.conf"
    export TMPDIR=$CROOT/tmp
}

# can_image: podman and buildah can build and run a FROM scratch image here.
can_image() {
    local tool
    for tool in podman buildah runc; do
        command -v "$tool" >/dev/null || {
            echo "$tool is not installed"
            return 1
        }
    done
    need_bin >/dev/null
    container_setup
    mkdir -p "$CROOT/probe"
    cp "$BIN" "$CROOT/probe/cnibox"
    printf 'FROM scratch\nCOPY cnibox /cnibox\nENTRYPOINT ["/cnibox","--version"]\n' >"$CROOT/probe/Containerfile"
    if ! buildah_ bud --isolation chroot -q -t localhost/cnibox-probe:1 -f "$CROOT/probe/Containerfile" "$CROOT/probe" >"$CROOT/probe.log" 2>&1; then
        echo "buildah cannot build here: $(tail -n 1 "$CROOT/probe.log")"
        return 1
    fi
    if ! podman_ run --rm --network none localhost/cnibox-probe:1 >"$CROOT/probe.log" 2>&1; then
        echo "podman cannot run containers here: $(tail -n 1 "$CROOT/probe.log")"
        return 1
    fi
    grep -qx "cnibox $VERSION" "$CROOT/probe.log" || {
        echo "podman ran the probe but it printed: $(cat "$CROOT/probe.log")"
        return 1
    }
    podman_ rmi -f localhost/cnibox-probe:1 >/dev/null 2>&1 || true
}

image() {
    need_bin
    local reason
    new_tmp
    if ! reason=$(can_image); then
        log "SKIP: image: $reason"
        echo "SKIP: image test not run: $reason"
        return 0
    fi
    container_setup
    PODMAN_OK=1
    ensure_release
    local t=$TMP/image tag=localhost/cnibox:$VERSION
    mkdir -p "$t/ctx" "$t/host"
    tar -xzf "$DIST/cnibox-$VERSION-linux-amd64.tgz" -C "$t/ctx"

    log "buildah bud -f packaging/Containerfile (context: the unpacked amd64 tarball)"
    buildah_ bud --isolation chroot -q --build-arg "VERSION=$VERSION" -t "$tag" \
        -f packaging/Containerfile "$t/ctx" >"$t/build.log" 2>&1 || {
        cat "$t/build.log" >&2
        fail "buildah bud failed"
    }
    [ "$(podman_ image inspect --format '{{json .Config.Entrypoint}}' "$tag")" = '["/cnibox","install","/host/opt/cni/bin"]' ] ||
        fail "image entrypoint: $(podman_ image inspect --format '{{json .Config.Entrypoint}}' "$tag")"
    podman_ image inspect --format '{{index .Labels "org.opencontainers.image.version"}}' "$tag" | grep -qx "$VERSION" ||
        fail "image version label"
    podman_ image save --format oci-dir -o "$t/oci" "$tag" >"$t/save.log" 2>&1 || {
        cat "$t/save.log" >&2
        fail "podman image save failed"
    }
    local blob files
    : >"$t/members"
    for blob in "$t"/oci/blobs/sha256/*; do
        tar -tf "$blob" >>"$t/members" 2>/dev/null || true
    done
    files=$(sed 's|^\./||; s|^/||' "$t/members" | LC_ALL=C sort | tr '\n' ' ')
    [ "$files" = "LICENSE cnibox " ] ||
        fail "image (FROM scratch) should hold only /cnibox and /LICENSE, holds: $files"
    log "image: $(podman_ image inspect --format '{{.Size}}' "$tag") bytes, files: $files"

    log "podman run: installs into the host dir mounted at /host/opt/cni/bin (caps dropped, read-only root)"
    go_copy "$t/host"
    local -a runopts=(--network none --user 0 --cap-drop all --read-only --security-opt no-new-privileges)
    podman_ run --rm "${runopts[@]}" -v "$t/host:/host/opt/cni/bin" "$tag" >"$t/out" 2>"$t/err" || {
        cat "$t/err" >&2
        fail "podman run (install) failed"
    }
    cat "$t/err"
    [ ! -s "$t/out" ] || fail "the image printed on stdout: $(cat "$t/out")"
    grep -q '^\[INFO\] installed into /host/opt/cni/bin: ' "$t/err" || fail "no summary from the image"
    check_layout "$t/host" symlink
    cmp -s "$GO_DIR/${APPLETS[0]}" "$t/host/${APPLETS[0]}.orig" 2>/dev/null || [ ! -e "$GO_DIR/${APPLETS[0]}" ] ||
        fail "image did not keep the Go ${APPLETS[0]} as .orig"
    printf '' | env -i CNI_COMMAND=VERSION "$t/host/${APPLETS[0]}" | jq -e .supportedVersions >/dev/null ||
        fail "the host's ${APPLETS[0]} link does not run after the image install"

    log "podman run again: nothing changes"
    local before
    before=$(snapshot "$t/host")
    podman_ run --rm "${runopts[@]}" -v "$t/host:/host/opt/cni/bin" "$tag" 2>"$t/err" >/dev/null ||
        fail "second podman run failed: $(cat "$t/err")"
    grep -q "installed into /host/opt/cni/bin: 0 new, 0 updated, $((${#APPLETS[@]} + 1)) unchanged" "$t/err" ||
        fail "second run not a no-op: $(grep installed "$t/err")"
    [ "$before" = "$(snapshot "$t/host")" ] || fail "second image run changed the host dir"
    run 0 dash install.sh --uninstall --bin-dir "$t/host"
    same_as_go "$t/host"

    log "DaemonSet mode: --sleep keeps the container up; podman stop (SIGTERM) ends it with 0"
    mkdir -p "$t/host2"
    local cid t0 code
    cid=$(podman_ run -d "${runopts[@]}" -v "$t/host2:/host/opt/cni/bin" "$tag" --sleep)
    sleep 2
    [ "$(podman_ inspect --format '{{.State.Running}}' "$cid")" = true ] ||
        fail "--sleep container is not running: $(podman_ logs "$cid" 2>&1)"
    check_layout "$t/host2" symlink
    t0=$SECONDS
    podman_ stop -t 20 "$cid" >/dev/null
    code=$(podman_ inspect --format '{{.State.ExitCode}}' "$cid")
    [ "$code" = 0 ] || fail "--sleep container exited $code"
    [ $((SECONDS - t0)) -lt 10 ] || fail "--sleep did not stop on SIGTERM (waited for the kill)"
    podman_ rm -f "$cid" >/dev/null
    podman_ rmi -f "$tag" >/dev/null
    log "image passed"
}

# ------------------------------------------------------------------ deb

deb() {
    need_bin
    new_tmp
    ensure_release
    local t=$TMP/deb debv=${VERSION/-/\~}-1 pkg a
    mkdir -p "$t"
    pkg=$DIST/cnibox_${debv}_amd64.deb
    [ -f "$pkg" ] || fail "$pkg missing"
    (cd "$DIST" && sha256sum -c --quiet "${pkg##*/}.sha256") || fail "${pkg##*/}.sha256 does not check"
    log "${pkg##*/}: $(stat -c %s "$pkg") bytes"

    dpkg-deb -I "$pkg" >"$t/info"
    [ "$(dpkg-deb -f "$pkg" Package)" = cnibox ] || fail "Package"
    [ "$(dpkg-deb -f "$pkg" Version)" = "$debv" ] || fail "Version $(dpkg-deb -f "$pkg" Version), want $debv"
    [ "$(dpkg-deb -f "$pkg" Architecture)" = amd64 ] || fail "Architecture"
    for a in Conflicts Replaces Provides; do
        dpkg-deb -f "$pkg" "$a" | grep -qw containernetworking-plugins || fail "$a lacks containernetworking-plugins"
    done
    dpkg-deb -f "$pkg" Depends | grep -q . && fail "a static binary needs no Depends"
    dpkg-deb -c "$pkg" >"$t/contents"
    grep -q '^-rwxr-xr-x root/root .* \./usr/lib/cni/cnibox$' "$t/contents" || fail "no 0755 root:root /usr/lib/cni/cnibox"
    for a in "${APPLETS[@]}"; do
        grep -q "^l.* \./usr/lib/cni/$a -> cnibox\$" "$t/contents" || fail "no /usr/lib/cni/$a -> cnibox"
    done
    awk '{ print $6 }' "$t/contents" | grep -v -e '^\./usr/lib/cni/' -e '^\./usr/share/doc/cnibox/' \
        -e '^\./$' -e '^\./usr/$' -e '^\./usr/lib/$' -e '^\./usr/share/$' -e '^\./usr/share/doc/$' >"$t/stray" || true
    [ ! -s "$t/stray" ] || fail "files outside /usr/lib/cni and the doc dir: $(cat "$t/stray")"
    grep -q '\./usr/share/doc/cnibox/copyright$' "$t/contents" || fail "no copyright file"
    dpkg-deb -x "$pkg" "$t/x"
    cmp -s "$t/x/usr/lib/cni/cnibox" "$BIN" || fail "the .deb's binary differs from $BIN"
    if [ -f "$DIST/cnibox_${debv}_arm64.deb" ]; then
        [ "$(dpkg-deb -f "$DIST/cnibox_${debv}_arm64.deb" Architecture)" = arm64 ] || fail "arm64 .deb Architecture"
        dpkg-deb --fsys-tarfile "$DIST/cnibox_${debv}_arm64.deb" | tar -xOf - ./usr/lib/cni/cnibox >"$t/arm64-bin"
        file -b "$t/arm64-bin" | grep -q 'ARM aarch64' || fail "arm64 .deb holds: $(file -b "$t/arm64-bin")"
    fi
    log "dpkg-deb -I/-c: fields, /usr/lib/cni/cnibox + ${#APPLETS[@]} links, docs ok"

    log "install/remove in a throwaway root (--instdir/--admindir), over a containernetworking-plugins"
    local root=$t/root admin=$t/admin
    mkdir -p "$root" "$admin/info" "$admin/updates" "$t/fake/DEBIAN" "$t/fake/usr/lib/cni"
    touch "$admin/status" "$admin/available"
    local -a dp=(dpkg --instdir="$root" --admindir="$admin" --force-not-root --log=/dev/null)
    # A stand-in for Debian's package: same name, files in /usr/lib/cni.
    printf 'Package: containernetworking-plugins\nVersion: 1.1.1+ds1-3\nArchitecture: amd64\nMaintainer: test <test@invalid>\nDescription: stand-in\n' >"$t/fake/DEBIAN/control"
    cp "$GO_DIR/loopback" "$t/fake/usr/lib/cni/loopback"
    echo bridge >"$t/fake/usr/lib/cni/bridge"
    dpkg-deb --root-owner-group --build "$t/fake" "$t/cnp.deb" >/dev/null
    "${dp[@]}" -i "$t/cnp.deb" >/dev/null
    [ -f "$root/usr/lib/cni/bridge" ] || fail "stand-in package not installed"
    "${dp[@]}" -i "$pkg" >"$t/dpkg.log" 2>&1 || {
        cat "$t/dpkg.log" >&2
        fail "dpkg -i cnibox failed"
    }
    dpkg-query --admindir="$admin" -W -f '${Status}\n' containernetworking-plugins 2>/dev/null | grep -q 'install ok installed' &&
        fail "containernetworking-plugins still installed: Conflicts+Replaces should have removed it"
    dpkg-query --admindir="$admin" -W -f '${Status} ${Version}\n' cnibox | grep -qx "install ok installed $debv" ||
        fail "cnibox not installed"
    [ ! -e "$root/usr/lib/cni/bridge" ] || in_applets bridge || fail "the stand-in's bridge is still there"
    for a in "${APPLETS[@]}"; do
        [ "$(readlink "$root/usr/lib/cni/$a")" = cnibox ] || fail "/usr/lib/cni/$a is not -> cnibox"
    done
    printf '' | env -i CNI_COMMAND=VERSION "$root/usr/lib/cni/${APPLETS[0]}" | jq -e .supportedVersions >/dev/null ||
        fail "installed ${APPLETS[0]} does not run"
    "${dp[@]}" -r cnibox >/dev/null
    [ -z "$(find "$root" -type f -o -type l)" ] || fail "dpkg -r left files: $(find "$root" -type f -o -type l)"
    log "deb passed"
}

# ------------------------------------------------------------------ main

[ -n "$VERSION" ] || fail "no version in Cargo.toml"
[ $# -ge 1 ] || set -- all
case $1 in
    --can)
        [ "${2:-}" = image ] || fail "--can knows only 'image'"
        can_image
        ;;
    deps) deps ;;
    lint) lint ;;
    install) install_matrix ;;
    self-install) self_install ;;
    release) release ;;
    image) image ;;
    deb) deb ;;
    all)
        deps
        lint
        install_matrix
        self_install
        release
        image
        deb
        ;;
    *) fail "unknown section '$1' (see the head of $0)" ;;
esac
