#!/bin/sh
# packaging/build-release.sh: build the static release binaries and write
#   dist/cnibox-<version>-linux-<arch>.tgz       flat layout, as upstream's
#   dist/cnibox_<version>-1_<arch>.deb           (packaging/deb/build-deb.sh)
#   dist/<each of those>.sha256                  sha256sum -c format
# for amd64 (x86_64-unknown-linux-musl) and arm64 (aarch64-unknown-linux-musl,
# linked with rust-lld, so no cross gcc is needed).
#
# The tarball holds, at its root (no leading directory, no "./" entry, so
# `tar -xzf ... -C /opt/cni/bin` does not touch the directory's own mode):
#   cnibox, one relative symlink per applet (NAME -> cnibox), install.sh,
#   README.md, LICENSE and SHA256SUMS (sha256 of cnibox, install.sh, README.md,
#   LICENSE: what `install.sh --verify` checks).
# Owner root:root, mtimes from SOURCE_DATE_EPOCH (default: the last commit's
# time), gzip -n: rebuilding the same commit gives the same bytes.
#
# POSIX sh, needs GNU tar, gzip, sha256sum, cargo/rustup, dpkg-deb (for the
# .deb) and, to list the applets of a foreign-architecture binary,
# qemu-<arch>-static (Debian package qemu-user-static).

set -eu

usage() {
    cat <<USAGE
Usage: $0 [--arch amd64,arm64] [--out DIR] [--no-deb] [--no-build]

  --arch LIST   architectures to build (default: amd64,arm64)
  --out DIR     output directory (default: dist in the checkout)
  --no-deb      only tarballs, no Debian packages
  --no-build    use the binaries already in target/<triple>/release
  -h, --help    this help

Exit codes: 0 ok, 1 failure, 2 usage error.
USAGE
}

info() { printf '[build-release] %s\n' "$*" >&2; }
die() {
    printf '[build-release] ERROR: %s\n' "$*" >&2
    exit 1
}

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
ARCHES="amd64 arm64"
OUT=$ROOT/dist
DEB=1
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
        --arch)
            [ $# -ge 2 ] || { usage >&2 && exit 2; }
            ARCHES=$(printf '%s' "$2" | tr ',' ' ')
            shift 2
            ;;
        --out)
            [ $# -ge 2 ] || { usage >&2 && exit 2; }
            OUT=$2
            shift 2
            ;;
        --no-deb) DEB=0 && shift ;;
        --no-build) BUILD=0 && shift ;;
        -h | --help) usage && exit 0 ;;
        *) usage >&2 && exit 2 ;;
    esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd -P)

VERSION=$(sed -n '/^\[package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n 1)
[ -n "$VERSION" ] || die "no version in $ROOT/Cargo.toml"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null) || SOURCE_DATE_EPOCH=$(date +%s)
fi
export SOURCE_DATE_EPOCH

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
[ -d "${HOME:-/root}/.cargo/bin" ] && PATH=${HOME:-/root}/.cargo/bin:$PATH && export PATH

STAGE=
cleanup() {
    [ -n "$STAGE" ] && rm -rf "$STAGE"
    return 0
}
trap cleanup EXIT

triple_of() {
    case $1 in
        amd64) echo x86_64-unknown-linux-musl ;;
        arm64) echo aarch64-unknown-linux-musl ;;
        *) die "unknown architecture '$1' (amd64 or arm64)" ;;
    esac
}

qemu_of() {
    case $1 in
        amd64) echo qemu-x86_64-static ;;
        arm64) echo qemu-aarch64-static ;;
    esac
}

build() {
    _triple=$(triple_of "$1")
    if command -v rustup >/dev/null 2>&1 &&
        ! rustup target list --installed | grep -qx "$_triple"; then
        info "rustup target add $_triple"
        rustup target add "$_triple" >&2
    fi
    info "cargo build --release --target $_triple"
    # rust-lld ships with the toolchain: no aarch64 gcc needed. The variable
    # only affects this target, so host builds keep their own linker.
    (
        cd "$ROOT"
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-rust-lld}
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER
        cargo build --release --target "$_triple"
    ) >&2 || die "build for $1 failed"
}

# run_bin ARCH BIN ARGS...: run BIN natively, or under qemu-user-static.
run_bin() {
    _arch=$1
    shift
    if "$1" --version >/dev/null 2>&1; then
        "$@"
    elif _q=$(command -v "$(qemu_of "$_arch")"); then
        "$_q" "$@"
    else
        die "cannot run the $_arch binary here: install qemu-user-static"
    fi
}

release() {
    _arch=$1
    _bin=$TARGET_DIR/$(triple_of "$_arch")/release/cnibox
    [ "$BUILD" -eq 0 ] || build "$_arch"
    [ -f "$_bin" ] || die "$_bin missing"
    _got=$(run_bin "$_arch" "$_bin" --version)
    [ "$_got" = "cnibox $VERSION" ] || die "$_bin says '$_got', Cargo.toml says $VERSION"
    _applets=$(run_bin "$_arch" "$_bin" --list | tr '\n' ' ')
    [ -n "$_applets" ] || die "$_bin --list printed nothing"

    STAGE=$(mktemp -d "$OUT/.stage-$_arch.XXXXXX")
    cp "$_bin" "$STAGE/cnibox"
    cp "$ROOT/install.sh" "$ROOT/README.md" "$ROOT/LICENSE" "$STAGE/"
    chmod 0755 "$STAGE/cnibox" "$STAGE/install.sh"
    chmod 0644 "$STAGE/README.md" "$STAGE/LICENSE"
    for _a in $_applets; do
        ln -s cnibox "$STAGE/$_a"
    done
    (cd "$STAGE" && sha256sum cnibox install.sh README.md LICENSE >SHA256SUMS)
    chmod 0644 "$STAGE/SHA256SUMS"
    find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

    _tgz=cnibox-$VERSION-linux-$_arch.tgz
    # shellcheck disable=SC2086 # the applet list
    (cd "$STAGE" && tar --format=gnu --owner=0 --group=0 --numeric-owner \
        --mtime="@$SOURCE_DATE_EPOCH" --sort=name \
        -cf - cnibox install.sh README.md LICENSE SHA256SUMS $_applets) |
        gzip -9n >"$OUT/$_tgz.tmp"
    mv -f "$OUT/$_tgz.tmp" "$OUT/$_tgz"
    (cd "$OUT" && sha256sum "$_tgz" >"$_tgz.sha256")
    info "$OUT/$_tgz ($(wc -c <"$OUT/$_tgz") bytes; binary $(wc -c <"$STAGE/cnibox") bytes; applets: $_applets)"

    if [ "$DEB" -eq 1 ]; then
        _deb=$(sh "$ROOT/packaging/deb/build-deb.sh" --from "$STAGE" --arch "$_arch" --version "$VERSION" --out "$OUT")
        (cd "$OUT" && sha256sum "${_deb##*/}" >"${_deb##*/}.sha256")
        info "$_deb"
    fi
    rm -rf "$STAGE"
    STAGE=
}

for _arch in $ARCHES; do
    release "$_arch"
done
info "done: $OUT"
