#!/bin/sh
# packaging/deb/build-deb.sh: build cnibox_<version>-1_<arch>.deb with
# dpkg-deb (no debhelper, no cargo-deb) from a flat release directory (an
# unpacked release tarball, or the stage dir of packaging/build-release.sh):
#
#   /usr/lib/cni/cnibox                  the static binary (Debian's CNI dir)
#   /usr/lib/cni/NAME -> cnibox          one relative symlink per applet
#   /usr/share/doc/cnibox/{copyright,README.md,changelog.Debian.gz}
#
# Control fields: Conflicts/Replaces/Provides containernetworking-plugins (so
# dpkg removes Debian's Go plugins when this is installed), Provides
# container-network-stack (= 1) like that package; no Depends (static).
# Prints the path of the .deb on stdout.

set -eu

usage() {
    cat <<USAGE
Usage: $0 --from DIR --arch amd64|arm64 --version VERSION [--out DIR]

  --from DIR        flat release dir: cnibox, NAME -> cnibox links, README.md
  --arch ARCH       Debian architecture (amd64, arm64)
  --version V       upstream version (Cargo.toml); the package is V-1
                    (a "-pre" suffix becomes "~pre", so it sorts first)
  --out DIR         where the .deb goes (default: .)
Env: DEB_MAINTAINER (default "cnibox maintainers <cnibox@invalid>"),
     SOURCE_DATE_EPOCH (file and changelog dates).
USAGE
}

die() {
    printf '[build-deb] ERROR: %s\n' "$*" >&2
    exit 1
}

HERE=$(cd "$(dirname "$0")" && pwd -P)
FROM=
ARCH=
VERSION=
OUT=.
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || case $1 in -h | --help) ;; *) usage >&2 && exit 2 ;; esac
    case $1 in
        --from) FROM=$2 && shift 2 ;;
        --arch) ARCH=$2 && shift 2 ;;
        --version) VERSION=$2 && shift 2 ;;
        --out) OUT=$2 && shift 2 ;;
        -h | --help) usage && exit 0 ;;
        *) usage >&2 && exit 2 ;;
    esac
done
if [ -z "$FROM" ] || [ -z "$ARCH" ] || [ -z "$VERSION" ]; then
    usage >&2
    exit 2
fi
[ -f "$FROM/cnibox" ] || die "$FROM/cnibox missing"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
MAINTAINER=${DEB_MAINTAINER:-cnibox maintainers <cnibox@invalid>}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
export SOURCE_DATE_EPOCH
DEB_VERSION=$(printf '%s' "$VERSION" | sed 's/-/~/')-1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd -P)

PKG=$(mktemp -d "${TMPDIR:-/tmp}/cnibox-deb.XXXXXX")
trap 'rm -rf "$PKG"' EXIT
mkdir -p "$PKG/DEBIAN" "$PKG/usr/lib/cni" "$PKG/usr/share/doc/cnibox"
chmod 0755 "$PKG" "$PKG/DEBIAN" "$PKG/usr" "$PKG/usr/lib" "$PKG/usr/lib/cni" \
    "$PKG/usr/share" "$PKG/usr/share/doc" "$PKG/usr/share/doc/cnibox"

cp "$FROM/cnibox" "$PKG/usr/lib/cni/cnibox"
chmod 0755 "$PKG/usr/lib/cni/cnibox"
APPLETS=
for _p in "$FROM"/*; do
    if [ ! -L "$_p" ] || [ "$(readlink "$_p")" != cnibox ]; then
        continue
    fi
    _n=${_p##*/}
    ln -s cnibox "$PKG/usr/lib/cni/$_n"
    APPLETS="$APPLETS${APPLETS:+, }$_n"
done
[ -n "$APPLETS" ] || die "no NAME -> cnibox links in $FROM"

cp "$HERE/copyright" "$PKG/usr/share/doc/cnibox/copyright"
[ -f "$FROM/README.md" ] && cp "$FROM/README.md" "$PKG/usr/share/doc/cnibox/README.md"
{
    printf 'cnibox (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
    printf '  * Release %s.\n\n' "$VERSION"
    printf ' -- %s  %s\n' "$MAINTAINER" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$PKG/usr/share/doc/cnibox/changelog.Debian.gz"
chmod 0644 "$PKG"/usr/share/doc/cnibox/*

(cd "$PKG" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$PKG/DEBIAN/md5sums"
SIZE=$(du -sk --apparent-size "$PKG/usr" | cut -f1)
sed -e "s|@VERSION@|$DEB_VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@SIZE@|$SIZE|" \
    -e "s|@MAINTAINER@|$MAINTAINER|" -e "s|@APPLETS@|$APPLETS|" \
    "$HERE/control.in" >"$PKG/DEBIAN/control"
chmod 0644 "$PKG/DEBIAN/control" "$PKG/DEBIAN/md5sums"
find "$PKG" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

DEB=$OUT/cnibox_${DEB_VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
printf '%s\n' "$DEB"
