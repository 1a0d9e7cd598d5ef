#!/bin/sh
# install.sh: install the cnibox multicall binary and one relative symlink per
# applet (loopback -> cnibox, bridge -> cnibox, ...) into a CNI bin dir, then
# prove the install works by running the installed loopback applet in a
# throwaway network namespace. Also upgrades and uninstalls.
#
# POSIX sh: must keep working under dash and busybox sh (tests/packaging.sh
# checks). Run ./install.sh --help for options and exit codes.

set -eu

# ---------------------------------------------------------------- constants

TARGET_TRIPLE=x86_64-unknown-linux-musl
MANIFEST=.cnibox.manifest
EXIT_OK=0
EXIT_USAGE=2
EXIT_NO_BINARY=3
EXIT_INSTALL=4
EXIT_VERIFY=5
EXIT_CHECKSUM=6

# ---------------------------------------------------------------- defaults

BIN_DIR=/opt/cni/bin
VERIFY_RUN=1
COPY=0
ONLY=
ONLY_SET=0
SKIP_EXISTING=0
BACKUP=1
UNINSTALL=0
VERIFY_SUMS=0

# ---------------------------------------------------------------- state

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd -P)
WORK_DIR=      # mktemp -d scratch dir, removed on exit
TMP_FILE=      # half-made file/link in the bin dir, removed on exit if still there
OLD_PIN=       # hard link (or copy) of the previous cnibox, removed on exit
NETNS=         # verification namespace, deleted on exit
IP=            # path of an iproute2 `ip` that knows `netns`
SRC_BIN=       # the cnibox binary to install
VERSION=       # its version ("0.1.0")
DEST=          # ${DESTDIR}${BIN_DIR}
APPLETS=       # applet names from `cnibox --list`
NEW=
UPDATED=
UNCHANGED=
REPLACED=
SKIPPED=
BACKED_UP=     # names kept as NAME.orig by this run
REMOVED=
RESTORED=
LEFT=

# ---------------------------------------------------------------- messages

info() { printf '[INFO] %s\n' "$*" >&2; }
warn() { printf '[WARN] %s\n' "$*" >&2; }
error() { printf '[ERROR] %s\n' "$*" >&2; }
die() {
    _code=$1
    shift
    error "$@"
    exit "$_code"
}

usage() {
    cat <<EOF
Usage: $0 [OPTIONS]

Install cnibox (all CNI reference plugins in one static binary) and one
relative symlink per applet into a CNI bin dir; or, with --uninstall,
remove them again.

Where the binary comes from:
  - a prebuilt 'cnibox' next to this script (release tarball), if present;
  - otherwise it is built from this checkout with
      cargo build --release --target $TARGET_TRIPLE
    (adding the rustup target first if it is missing).

Options:
  --bin-dir DIR      install into DIR (default: /opt/cni/bin)
  --copy             hard links instead of symlinks (copies where a hard
                     link is impossible), for setups where a symlink does
                     not resolve (e.g. another container's mounts)
  --only A,B,...     install only these applets (the binary always goes in)
  --skip-existing    leave files of an applet's name that cnibox did not
                     install alone (e.g. another vendor's plugin)
  --no-backup        replace such foreign files without keeping NAME.orig
  --verify           check the binary against SHA256SUMS next to it (as in
                     the release tarball) before running or installing it;
                     needs sha256sum
  --uninstall        remove what cnibox installed: DIR/cnibox and every
                     link, hard link or copy of it, nothing else; put back
                     the NAME.orig files it kept; never removes DIR itself
  --no-verify-run    skip the proof step (loopback ADD/CHECK/DEL in a
                     throwaway network namespace; needs root and iproute2)
  -h, --help         show this help and exit

Environment:
  DESTDIR            staging root prepended to the bin dir (packaging)
  CARGO_TARGET_DIR   honoured when building from source

How files are placed: the binary is copied to a temp file in the bin dir and
renamed into place (running plugins keep the old file, nobody sees a
half-written one, no "text file busy"); each applet link is made under a temp
name and renamed over the old name. What is already in place is left alone,
so re-running and upgrading are idempotent. A file of an applet's name that
cnibox did not put there (e.g. a Go plugin) is replaced and kept as NAME.orig,
unless --no-backup or --skip-existing. DIR/$MANIFEST records what was
placed and kept, for --uninstall. 'cnibox install DIR' (in the binary, for
images without a shell) places files the same way.

Output: progress and a summary of what changed on stderr
([INFO]/[WARN]/[ERROR]); the loopback ADD result JSON of the proof step on
stdout (nothing else is ever written there).

Exit codes:
  0  done (installed and verified unless --no-verify-run; or uninstalled)
  1  unexpected failure
  2  usage error (bad option, argument or --only name)
  3  no binary: nothing prebuilt next to the script and the build failed,
     or the binary does not run / lists no applets
  4  install or uninstall failed (bin dir not writable, a directory in the
     way, copy/link/rename failed)
  5  proof run failed (namespace setup or loopback ADD/CHECK/DEL)
  6  --verify failed (no SHA256SUMS, no sha256sum, or checksum mismatch)
EOF
}

# ---------------------------------------------------------------- cleanup

cleanup() {
    _rc=$?
    set +e
    [ -n "$TMP_FILE" ] && rm -f "$TMP_FILE"
    [ -n "$OLD_PIN" ] && rm -f "$OLD_PIN"
    if [ -n "$NETNS" ]; then
        "$IP" netns delete "$NETNS" 2>/dev/null || warn "could not delete netns $NETNS"
    fi
    [ -n "$WORK_DIR" ] && rm -rf "$WORK_DIR"
    trap - EXIT
    exit "$_rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------- options

need_arg() {
    # need_arg OPTION NUMBER_OF_REMAINING_ARGS
    [ "$2" -ge 2 ] || die "$EXIT_USAGE" "option $1 needs an argument (see --help)"
}

set_only() {
    ONLY_SET=1
    ONLY=$(printf '%s' "$1" | tr ',' ' ')
    [ -n "$(printf '%s' "$ONLY" | tr -d ' ')" ] || die "$EXIT_USAGE" "--only needs at least one applet name"
}

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --bin-dir)
                need_arg "$1" $#
                BIN_DIR=$2
                shift 2
                ;;
            --bin-dir=*)
                BIN_DIR=${1#*=}
                shift
                ;;
            --only)
                need_arg "$1" $#
                set_only "$2"
                shift 2
                ;;
            --only=*)
                set_only "${1#*=}"
                shift
                ;;
            --copy) COPY=1 && shift ;;
            --skip-existing) SKIP_EXISTING=1 && shift ;;
            --no-backup) BACKUP=0 && shift ;;
            --uninstall) UNINSTALL=1 && shift ;;
            --verify) VERIFY_SUMS=1 && shift ;;
            --no-verify-run) VERIFY_RUN=0 && shift ;;
            -h | --help)
                usage
                exit "$EXIT_OK"
                ;;
            --)
                shift
                [ $# -eq 0 ] || die "$EXIT_USAGE" "unexpected argument: $1 (see --help)"
                ;;
            -*)
                die "$EXIT_USAGE" "unknown option: $1 (see --help)"
                ;;
            *)
                die "$EXIT_USAGE" "unexpected argument: $1 (see --help)"
                ;;
        esac
    done

    if [ "$UNINSTALL" -eq 1 ] &&
        [ "$COPY$ONLY_SET$SKIP_EXISTING$BACKUP$VERIFY_SUMS" != 00010 ]; then
        die "$EXIT_USAGE" "--uninstall takes only --bin-dir (and DESTDIR)"
    fi
    [ -n "$BIN_DIR" ] || die "$EXIT_USAGE" "--bin-dir must not be empty"
    case $BIN_DIR in
        /*) ;;
        *) BIN_DIR=$(pwd -P)/$BIN_DIR ;;
    esac
    DEST=${DESTDIR:-}
    DEST=${DEST%/}$BIN_DIR
}

# ---------------------------------------------------------------- source binary

build_from_source() {
    [ -f "$SCRIPT_DIR/Cargo.toml" ] ||
        die "$EXIT_NO_BINARY" "no prebuilt cnibox next to $0 and no Cargo.toml in $SCRIPT_DIR to build from"
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        PATH=${HOME:-/root}/.cargo/bin:$PATH
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "$EXIT_NO_BINARY" "cargo not found: install a Rust toolchain (rustup) or use a release tarball"

    if command -v rustup >/dev/null 2>&1; then
        if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET_TRIPLE"; then
            info "adding rustup target $TARGET_TRIPLE"
            rustup target add "$TARGET_TRIPLE" >&2 ||
                die "$EXIT_NO_BINARY" "rustup target add $TARGET_TRIPLE failed"
        fi
    else
        warn "rustup not found; assuming the $TARGET_TRIPLE std library is available"
    fi

    info "building: cargo build --release --target $TARGET_TRIPLE"
    # Output of cargo goes to stderr like every other message of this script.
    (cd "$SCRIPT_DIR" && cargo build --release --target "$TARGET_TRIPLE") >&2 ||
        die "$EXIT_NO_BINARY" "build failed"

    _target_dir=${CARGO_TARGET_DIR:-$SCRIPT_DIR/target}
    case $_target_dir in
        /*) ;;
        *) _target_dir=$SCRIPT_DIR/$_target_dir ;;
    esac
    SRC_BIN=$_target_dir/$TARGET_TRIPLE/release/cnibox
    [ -f "$SRC_BIN" ] || die "$EXIT_NO_BINARY" "build succeeded but $SRC_BIN is missing"
}

# verify_checksum: SRC_BIN against the SHA256SUMS next to it, before it is run.
verify_checksum() {
    _sums=$(dirname "$SRC_BIN")/SHA256SUMS
    [ -f "$_sums" ] || die "$EXIT_CHECKSUM" "--verify: no SHA256SUMS next to $SRC_BIN"
    command -v sha256sum >/dev/null 2>&1 ||
        die "$EXIT_CHECKSUM" "--verify: sha256sum not found (coreutils or busybox)"
    _want=$(awk '$2 == "cnibox" || $2 == "*cnibox" || $2 == "./cnibox" { print $1; exit }' "$_sums")
    [ -n "$_want" ] || die "$EXIT_CHECKSUM" "--verify: $_sums has no line for cnibox"
    _got=$(sha256sum <"$SRC_BIN" | awk '{ print $1 }')
    [ "$_got" = "$_want" ] ||
        die "$EXIT_CHECKSUM" "--verify: $SRC_BIN does not match $_sums (expected $_want, got $_got); not installing"
    info "verified $SRC_BIN against $_sums (sha256 $_got)"
}

find_source_binary() {
    if [ -f "$SCRIPT_DIR/cnibox" ]; then
        SRC_BIN=$SCRIPT_DIR/cnibox
        info "using prebuilt binary $SRC_BIN"
    elif [ "$VERIFY_SUMS" -eq 1 ]; then
        die "$EXIT_CHECKSUM" "--verify needs a prebuilt cnibox with SHA256SUMS next to $0 (a release tarball); there is none"
    else
        build_from_source
    fi
    [ "$VERIFY_SUMS" -eq 1 ] && verify_checksum
    [ -x "$SRC_BIN" ] || die "$EXIT_NO_BINARY" "$SRC_BIN is not executable"

    _version=$("$SRC_BIN" --version 2>/dev/null) ||
        die "$EXIT_NO_BINARY" "$SRC_BIN does not run ('cnibox --version' failed; wrong architecture?)"
    VERSION=${_version#cnibox }
    info "source: $_version"

    APPLETS=$("$SRC_BIN" --list) ||
        die "$EXIT_NO_BINARY" "'$SRC_BIN --list' failed"
    [ -n "$APPLETS" ] || die "$EXIT_NO_BINARY" "'$SRC_BIN --list' printed no applets"
    for _a in $APPLETS; do
        case $_a in
            cnibox | .* | *[!a-z0-9_-]*)
                die "$EXIT_NO_BINARY" "'cnibox --list' printed an unusable applet name: '$_a'"
                ;;
        esac
    done

    if [ "$ONLY_SET" -eq 1 ]; then
        for _a in $ONLY; do
            # shellcheck disable=SC2086 # a list of words
            in_list "$_a" $APPLETS ||
                die "$EXIT_USAGE" "--only: '$_a' is not an applet of this cnibox (known: $(printf '%s ' "$APPLETS" | tr '\n' ' '))"
        done
        APPLETS=$ONLY
    fi
}

# in_list WORD LIST...: whether WORD is one of LIST.
in_list() {
    _w=$1
    shift
    for _x in "$@"; do
        [ "$_x" = "$_w" ] && return 0
    done
    return 1
}

# ---------------------------------------------------------------- install

# note CATEGORY NAME: remember what happened to NAME for the summary.
note() {
    case $1 in
        new) NEW="$NEW $2" ;;
        updated) UPDATED="$UPDATED $2" ;;
        unchanged) UNCHANGED="$UNCHANGED $2" ;;
        replaced) REPLACED="$REPLACED $2" ;;
        skipped) SKIPPED="$SKIPPED $2" ;;
        removed) REMOVED="$REMOVED $2" ;;
        restored) RESTORED="$RESTORED $2" ;;
        left) LEFT="$LEFT $2" ;;
    esac
}

exists() { [ -e "$1" ] || [ -L "$1" ]; }

prepare_dest() {
    if [ ! -d "$DEST" ]; then
        mkdir -p "$DEST" || die "$EXIT_INSTALL" "cannot create $DEST"
        info "created $DEST"
    fi
    [ -w "$DEST" ] || die "$EXIT_INSTALL" "$DEST is not writable (run as root?)"
}

# rename_into TMP DST: rename(2) TMP over DST. A symlink to a directory at
# DST is removed first (mv would move into the directory).
rename_into() {
    if [ -L "$2" ] && [ -d "$2" ]; then
        rm -f "$2" || die "$EXIT_INSTALL" "cannot remove $2"
    fi
    mv -f "$1" "$2" || die "$EXIT_INSTALL" "cannot rename $1 to $2"
    TMP_FILE=
}

# inode PATH: the inode number of PATH (links followed).
# shellcheck disable=SC2012 # only the first field (the number) is used
inode() { ls -diL "$1" 2>/dev/null | awk '{ print $1 }'; }

# same_inode A B: A and B (links followed) are the same file; only used for
# files in DEST, so one file system.
same_inode() {
    _i1=$(inode "$1")
    [ -n "$_i1" ] && [ "$_i1" = "$(inode "$2")" ]
}

# is_ours PATH: PATH (not followed) is cnibox's: a link to cnibox, or a hard
# link or copy of the installed, previous or new binary.
is_ours() {
    if [ -L "$1" ]; then
        _t=$(readlink "$1")
        [ "$_t" = cnibox ] && return 0
        [ "${_t##*/}" = cnibox ] && same_inode "$1" "$DEST/cnibox" && return 0
        return 1
    fi
    [ -f "$1" ] || return 1
    for _ref in "$DEST/cnibox" "$OLD_PIN" "$SRC_BIN"; do
        if [ -z "$_ref" ] || [ ! -f "$_ref" ] || [ -L "$_ref" ]; then
            continue
        fi
        [ "$_ref" != "$SRC_BIN" ] && same_inode "$1" "$_ref" && return 0
        cmp -s "$1" "$_ref" && return 0
    done
    return 1
}

# in_place PATH: PATH is already what this run would put there.
in_place() {
    if [ "$COPY" -eq 0 ]; then
        [ -L "$1" ] && [ "$(readlink "$1")" = cnibox ]
        return
    fi
    [ ! -L "$1" ] && [ -f "$1" ] && [ -x "$1" ] || return 1
    same_inode "$1" "$DEST/cnibox" || cmp -s "$1" "$DEST/cnibox"
}

install_binary() {
    _dst=$DEST/cnibox
    if [ -d "$_dst" ] && [ ! -L "$_dst" ]; then
        die "$EXIT_INSTALL" "$_dst is a directory; refusing to replace it"
    fi

    if [ -f "$_dst" ] && [ ! -L "$_dst" ] && [ -x "$_dst" ] && cmp -s "$SRC_BIN" "$_dst"; then
        note unchanged cnibox
        return 0
    fi

    _state=new
    if exists "$_dst"; then
        _state=updated
        _old=$("$_dst" --version 2>/dev/null) || _old="unknown version"
        info "replacing $_dst ($_old)"
        if [ -f "$_dst" ] && [ ! -L "$_dst" ]; then
            # Keep the previous binary reachable: links and copies of it are
            # cnibox's own and get replaced without a backup.
            OLD_PIN=$DEST/.cnibox.old.$$
            rm -f "$OLD_PIN"
            ln "$_dst" "$OLD_PIN" 2>/dev/null || cp "$_dst" "$OLD_PIN" ||
                die "$EXIT_INSTALL" "cannot keep a reference to the previous $_dst"
        fi
    fi

    # Copy to a temp name in the same directory, then rename(2) over the old
    # binary: running plugins keep the old inode, no "text file busy", never a
    # half-written cnibox, and every applet symlink flips at once.
    TMP_FILE=$DEST/.cnibox.new.$$
    rm -f "$TMP_FILE"
    cp "$SRC_BIN" "$TMP_FILE" || die "$EXIT_INSTALL" "cannot copy $SRC_BIN to $TMP_FILE"
    chmod 0755 "$TMP_FILE" || die "$EXIT_INSTALL" "cannot chmod $TMP_FILE"
    sync "$TMP_FILE" 2>/dev/null || sync
    rename_into "$TMP_FILE" "$_dst"
    note "$_state" cnibox
}

# backup NAME: keep the foreign DEST/NAME as DEST/NAME.orig; NAME itself
# stays until the link is renamed over it.
backup() {
    _p=$DEST/$1
    _o=$DEST/$1.orig
    if [ -d "$_o" ] && [ ! -L "$_o" ]; then
        die "$EXIT_INSTALL" "$_o is a directory; cannot keep $_p there (use --no-backup or --skip-existing)"
    fi
    exists "$_o" && warn "$_o exists; replacing it with the current $1"
    TMP_FILE=$DEST/.$1.orig.$$
    rm -f "$TMP_FILE"
    if [ -L "$_p" ]; then
        ln -s "$(readlink "$_p")" "$TMP_FILE"
    else
        ln "$_p" "$TMP_FILE" 2>/dev/null || cp -p "$_p" "$TMP_FILE"
    fi || die "$EXIT_INSTALL" "cannot back up $_p"
    rename_into "$TMP_FILE" "$_o"
    BACKED_UP="$BACKED_UP $1"
    info "kept the existing $1 as $_o"
}

install_link() {
    _name=$1
    _dst=$DEST/$_name
    _state=new
    if exists "$_dst"; then
        if in_place "$_dst"; then
            note unchanged "$_name"
            return 0
        elif is_ours "$_dst"; then
            _state=updated
        elif [ -d "$_dst" ] && [ ! -L "$_dst" ]; then
            die "$EXIT_INSTALL" "$_dst is a directory; refusing to replace it"
        elif [ "$SKIP_EXISTING" -eq 1 ]; then
            info "$_dst exists and is not cnibox's; left alone (--skip-existing)"
            note skipped "$_name"
            return 0
        else
            _state=replaced
            if [ "$BACKUP" -eq 1 ]; then
                backup "$_name"
            else
                warn "replacing $_dst without a backup (--no-backup)"
            fi
        fi
    fi

    # Made under a temp name, then renamed over the old name: never "file
    # exists", never a moment without a $_name.
    TMP_FILE=$DEST/.$_name.tmp.$$
    rm -f "$TMP_FILE"
    if [ "$COPY" -eq 0 ]; then
        ln -s cnibox "$TMP_FILE" || die "$EXIT_INSTALL" "cannot create symlink $TMP_FILE"
    elif ! ln "$DEST/cnibox" "$TMP_FILE" 2>/dev/null; then
        warn "hard link to $DEST/cnibox impossible here; copying"
        cp "$DEST/cnibox" "$TMP_FILE" || die "$EXIT_INSTALL" "cannot copy $DEST/cnibox to $TMP_FILE"
        chmod 0755 "$TMP_FILE" || die "$EXIT_INSTALL" "cannot chmod $TMP_FILE"
    fi
    rename_into "$TMP_FILE" "$_dst"
    note "$_state" "$_name"
}

# write_manifest: merge this run into DEST/.cnibox.manifest (same format as
# `cnibox install`): "file NAME" for what cnibox placed, "backup NAME" for
# each NAME.orig it kept.
write_manifest() {
    _m=$DEST/$MANIFEST
    _mode=symlink
    [ "$COPY" -eq 1 ] && _mode=copy
    TMP_FILE=$DEST/.cnibox.manifest.tmp.$$
    {
        echo "# cnibox install manifest: what cnibox placed here; read by install.sh --uninstall"
        echo "version $VERSION"
        echo "mode $_mode"
        {
            [ -f "$_m" ] && grep -E '^(file|backup) ' "$_m"
            for _n in $NEW $UPDATED $UNCHANGED $REPLACED; do echo "file $_n"; done
            for _n in $BACKED_UP; do echo "backup $_n"; done
        } | LC_ALL=C sort -u | while read -r _kind _n; do
            # A backup whose .orig is gone is forgotten.
            [ "$_kind" = backup ] && ! exists "$DEST/$_n.orig" && continue
            echo "$_kind $_n"
        done
    } >"$TMP_FILE" || die "$EXIT_INSTALL" "cannot write $TMP_FILE"
    if cmp -s "$TMP_FILE" "$_m"; then
        rm -f "$TMP_FILE"
        TMP_FILE=
        return 0
    fi
    chmod 0644 "$TMP_FILE"
    rename_into "$TMP_FILE" "$_m"
}

# summary_line LABEL LIST
summary_line() {
    [ -n "$2" ] || return 0
    info "  $1:$2"
}

count() {
    # shellcheck disable=SC2086 # word splitting is the point
    set -- $1
    echo $#
}

install_all() {
    prepare_dest
    install_binary
    for _a in $APPLETS; do
        install_link "$_a"
    done
    write_manifest
    info "installed into $DEST: $(count "$NEW") new, $(count "$UPDATED") updated, $(count "$UNCHANGED") unchanged, $(count "$REPLACED") replaced, $(count "$SKIPPED") skipped"
    summary_line new "$NEW"
    summary_line updated "$UPDATED"
    summary_line unchanged "$UNCHANGED"
    if [ "$BACKUP" -eq 1 ]; then
        summary_line "replaced (kept as .orig)" "$REPLACED"
    else
        summary_line replaced "$REPLACED"
    fi
    summary_line skipped "$SKIPPED"
}

# ---------------------------------------------------------------- uninstall

# manifest_has KIND NAME
manifest_has() {
    [ -f "$DEST/$MANIFEST" ] && grep -qx "$1 $2" "$DEST/$MANIFEST"
}

# uninstall_name NAME: remove DEST/NAME if it is cnibox's, putting back
# NAME.orig where cnibox kept one.
uninstall_name() {
    _p=$DEST/$1
    exists "$_p" || return 0
    if ! is_ours "$_p"; then
        if manifest_has file "$1"; then
            warn "$_p was installed by cnibox but has changed since; left alone"
            note left "$1"
        fi
        return 0
    fi
    # Without a manifest (e.g. the tarball was unpacked by hand) any NAME.orig
    # is taken as kept by cnibox.
    if exists "$_p.orig" && { manifest_has backup "$1" || [ ! -f "$DEST/$MANIFEST" ]; }; then
        rename_into "$_p.orig" "$_p"
        note restored "$1"
    else
        rm -f "$_p" || die "$EXIT_INSTALL" "cannot remove $_p"
        note removed "$1"
    fi
}

uninstall_all() {
    [ -d "$DEST" ] || die "$EXIT_INSTALL" "$DEST does not exist; nothing to uninstall"
    [ -w "$DEST" ] || die "$EXIT_INSTALL" "$DEST is not writable (run as root?)"
    if [ -f "$DEST/cnibox" ] && [ ! -L "$DEST/cnibox" ]; then
        _v=$("$DEST/cnibox" --version 2>/dev/null) || _v="cnibox (version unknown)"
        info "uninstalling $_v from $DEST"
    elif [ -f "$DEST/$MANIFEST" ]; then
        warn "$DEST/cnibox is missing; removing only links to it"
    else
        die "$EXIT_INSTALL" "no cnibox installation in $DEST (no cnibox, no $MANIFEST)"
    fi
    # Candidates: every entry of the dir (links, hard links and copies are
    # recognised by target, inode or content) and the manifest's names.
    _names=
    for _p in "$DEST"/*; do
        exists "$_p" || continue
        _n=${_p##*/}
        case $_n in cnibox | *.orig) continue ;; esac
        _names="$_names $_n"
    done
    if [ -f "$DEST/$MANIFEST" ]; then
        _names="$_names $(sed -n 's/^file //p' "$DEST/$MANIFEST" | grep -vx cnibox | tr '\n' ' ')"
    fi
    # shellcheck disable=SC2086 # a list of words
    _names=$(printf '%s\n' $_names | LC_ALL=C sort -u)
    for _n in $_names; do
        case $_n in *[!a-zA-Z0-9._-]* | .*) continue ;; esac
        uninstall_name "$_n"
    done
    if [ -f "$DEST/cnibox" ] && [ ! -L "$DEST/cnibox" ]; then
        rm -f "$DEST/cnibox" || die "$EXIT_INSTALL" "cannot remove $DEST/cnibox"
        note removed cnibox
    fi
    rm -f "$DEST/$MANIFEST"
    info "uninstalled from $DEST: $(count "$REMOVED") removed, $(count "$RESTORED") restored from .orig, $(count "$LEFT") left alone"
    summary_line removed "$REMOVED"
    summary_line "restored from .orig" "$RESTORED"
    summary_line "left alone (changed since install)" "$LEFT"
}

# ---------------------------------------------------------------- verify

PROOF_BIN=
PROOF_ARG=

# cni_run COMMAND STDIN: run the installed loopback applet with a clean
# environment; stdout goes to $WORK_DIR/out, stderr to $WORK_DIR/err.
cni_run() {
    set -- "$1" "$2" "$PROOF_BIN"
    [ -n "$PROOF_ARG" ] && set -- "$@" "$PROOF_ARG"
    _cmd=$1
    _in=$2
    shift 2
    printf '%s' "$_in" | env -i \
        PATH="${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}" \
        ${CNI_LOG_LEVEL:+"CNI_LOG_LEVEL=$CNI_LOG_LEVEL"} \
        CNI_COMMAND="$_cmd" \
        CNI_CONTAINERID=install-check \
        CNI_NETNS="/run/netns/$NETNS" \
        CNI_IFNAME=lo \
        CNI_PATH="$DEST" \
        "$@" >"$WORK_DIR/out" 2>"$WORK_DIR/err"
}

# cni_step COMMAND STDIN: cni_run, and die with everything it said on failure.
cni_step() {
    _rc=0
    cni_run "$1" "$2" || _rc=$?
    if [ "$_rc" -eq 0 ]; then
        info "loopback $1: ok"
        return 0
    fi
    error "loopback $1 failed (exit $_rc)"
    [ -s "$WORK_DIR/out" ] && error "stdout: $(cat "$WORK_DIR/out")"
    [ -s "$WORK_DIR/err" ] && error "stderr: $(cat "$WORK_DIR/err")"
    exit "$EXIT_VERIFY"
}

# Find iproute2's ip by absolute path: busybox sh prefers its own `ip` applet,
# which has no `netns`.
find_iproute2() {
    for _ip in /usr/sbin/ip /sbin/ip /usr/bin/ip /bin/ip "$(command -v ip 2>/dev/null)"; do
        case $_ip in /*) ;; *) continue ;; esac
        if [ -x "$_ip" ] && "$_ip" netns list >/dev/null 2>&1; then
            IP=$_ip
            return 0
        fi
    done
    return 1
}

lo_is_up() {
    "$IP" -n "$NETNS" -o link show dev lo | grep -q '[<,]UP[,>]'
}

verify_run() {
    "$DEST/cnibox" --list | grep -qx loopback ||
        die "$EXIT_VERIFY" "this cnibox has no loopback applet to verify with; use --no-verify-run"
    # The installed loopback link if this run owns it, else `cnibox loopback`.
    # shellcheck disable=SC2086 # lists of words
    if in_list loopback $NEW $UPDATED $UNCHANGED $REPLACED; then
        PROOF_BIN=$DEST/loopback
    else
        PROOF_BIN=$DEST/cnibox
        PROOF_ARG=loopback
    fi
    find_iproute2 ||
        die "$EXIT_VERIFY" "iproute2 'ip' with netns support not found; install iproute2 or use --no-verify-run"

    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cnibox-install.XXXXXX") ||
        die "$EXIT_VERIFY" "mktemp failed"

    NETNS=cnibox-install-$$
    info "verifying: loopback ADD/CHECK/DEL in throwaway netns $NETNS"
    if ! "$IP" netns add "$NETNS" 2>"$WORK_DIR/err"; then
        NETNS=
        die "$EXIT_VERIFY" "ip netns add failed: $(cat "$WORK_DIR/err") (not root? use --no-verify-run)"
    fi

    _conf='{"cniVersion":"1.1.0","name":"install-check","type":"loopback"}'
    cni_step ADD "$_conf"
    _result=$(cat "$WORK_DIR/out")
    [ -n "$_result" ] || die "$EXIT_VERIFY" "loopback ADD printed no result"
    info "loopback ADD result:"
    printf '%s\n' "$_result"
    lo_is_up || die "$EXIT_VERIFY" "after ADD, lo in $NETNS is not up"

    # Like libcni: CHECK and DEL get the ADD result as prevResult.
    _conf_prev='{"cniVersion":"1.1.0","name":"install-check","type":"loopback","prevResult":'$_result'}'
    cni_step CHECK "$_conf_prev"
    cni_step DEL "$_conf_prev"
    lo_is_up && warn "after DEL, lo in $NETNS is still up"

    "$IP" netns delete "$NETNS" || die "$EXIT_VERIFY" "could not delete netns $NETNS"
    NETNS=
    info "verified: $PROOF_BIN${PROOF_ARG:+ $PROOF_ARG} works"
}

# ---------------------------------------------------------------- main

main() {
    parse_args "$@"
    if [ "$UNINSTALL" -eq 1 ]; then
        uninstall_all
        info "done"
        return 0
    fi
    find_source_binary
    install_all
    if [ "$VERIFY_RUN" -eq 1 ]; then
        verify_run
    else
        info "skipping the verification run (--no-verify-run)"
    fi
    info "done"
}

main "$@"
