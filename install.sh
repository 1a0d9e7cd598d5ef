#!/bin/sh
# install.sh: install the cnibox multicall binary and one relative symlink per
# applet (loopback -> cnibox, bridge -> cnibox, ...) into a CNI bin dir, then
# prove the install works by running the installed loopback applet in a
# throwaway network namespace.
#
# POSIX sh: must keep working under dash and busybox sh (tests/run.sh checks).
# Run ./install.sh --help for options and exit codes.

set -eu

# ---------------------------------------------------------------- constants

TARGET_TRIPLE=x86_64-unknown-linux-musl
EXIT_OK=0
EXIT_USAGE=2
EXIT_NO_BINARY=3
EXIT_INSTALL=4
EXIT_VERIFY=5

# ---------------------------------------------------------------- defaults

BIN_DIR=/opt/cni/bin
VERIFY_RUN=1

# ---------------------------------------------------------------- state

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd -P)
WORK_DIR=      # mktemp -d scratch dir, removed on exit
TMP_BIN=       # half-installed binary, removed on exit if still there
TMP_LINK=      # half-made symlink, removed on exit if still there
NETNS=         # verification namespace, deleted on exit
IP=            # path of an iproute2 `ip` that knows `netns`
SRC_BIN=       # the cnibox binary to install
DEST=          # ${DESTDIR}${BIN_DIR}
APPLETS=       # newline-separated applet names from `cnibox --list`
NEW=
UPDATED=
UNCHANGED=

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
relative symlink per applet into a CNI bin dir.

Where the binary comes from:
  - a prebuilt 'cnibox' next to this script (release tarball), if present;
  - otherwise it is built from this checkout with
      cargo build --release --target $TARGET_TRIPLE
    (adding the rustup target first if it is missing).

Options:
  --bin-dir DIR      install into DIR (default: /opt/cni/bin)
  --no-verify-run    skip the proof step (loopback ADD/CHECK/DEL in a
                     throwaway network namespace; needs root and iproute2)
  -h, --help         show this help and exit

Environment:
  DESTDIR            staging root prepended to the bin dir (packaging)
  CARGO_TARGET_DIR   honoured when building from source

The binary is copied to a temp file in the bin dir and renamed into place;
each applet link is made as a temp link and renamed over the old name, so
re-running and upgrading are safe and idempotent. Files in the bin dir that
are named like an applet are replaced by the link.

Output: progress on stderr ([INFO]/[WARN]/[ERROR]); the loopback ADD result
JSON of the proof step on stdout.

Exit codes:
  0  installed (and verified, unless --no-verify-run)
  1  unexpected failure
  2  usage error (bad option or argument)
  3  no binary: nothing prebuilt next to the script and the build failed,
     or the binary does not run / lists no applets
  4  install failed (bin dir not writable, copy/link/rename failed)
  5  verification failed (namespace setup or loopback ADD/CHECK/DEL)
EOF
}

# ---------------------------------------------------------------- cleanup

cleanup() {
    _rc=$?
    set +e
    [ -n "$TMP_BIN" ] && rm -f "$TMP_BIN"
    [ -n "$TMP_LINK" ] && rm -f "$TMP_LINK"
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
            --no-verify-run)
                VERIFY_RUN=0
                shift
                ;;
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

find_source_binary() {
    if [ -f "$SCRIPT_DIR/cnibox" ]; then
        SRC_BIN=$SCRIPT_DIR/cnibox
        info "using prebuilt binary $SRC_BIN"
    else
        build_from_source
    fi
    [ -x "$SRC_BIN" ] || die "$EXIT_NO_BINARY" "$SRC_BIN is not executable"

    _version=$("$SRC_BIN" --version 2>/dev/null) ||
        die "$EXIT_NO_BINARY" "$SRC_BIN does not run ('cnibox --version' failed)"
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
}

# ---------------------------------------------------------------- install

# note CATEGORY NAME: remember what happened to NAME for the summary.
note() {
    case $1 in
        new) NEW="$NEW $2" ;;
        updated) UPDATED="$UPDATED $2" ;;
        unchanged) UNCHANGED="$UNCHANGED $2" ;;
    esac
}

prepare_dest() {
    if [ ! -d "$DEST" ]; then
        mkdir -p "$DEST" || die "$EXIT_INSTALL" "cannot create $DEST"
        info "created $DEST"
    fi
    [ -w "$DEST" ] || die "$EXIT_INSTALL" "$DEST is not writable (run as root?)"
}

install_binary() {
    _dst=$DEST/cnibox
    if [ -d "$_dst" ] && [ ! -L "$_dst" ]; then
        die "$EXIT_INSTALL" "$_dst is a directory; refusing to replace it"
    fi

    if [ -f "$_dst" ] && [ -x "$_dst" ] && cmp -s "$SRC_BIN" "$_dst"; then
        note unchanged cnibox
        return 0
    fi

    _state=new
    if [ -e "$_dst" ] || [ -L "$_dst" ]; then
        _state=updated
        _old=$("$_dst" --version 2>/dev/null) || _old="unknown version"
        info "replacing $_dst ($_old)"
    fi

    # Copy to a temp name in the same directory, then rename(2) over the old
    # binary: running plugins keep the old inode, no "text file busy", never a
    # half-written cnibox, and every applet symlink flips at once.
    TMP_BIN=$DEST/.cnibox.new.$$
    rm -f "$TMP_BIN"
    cp "$SRC_BIN" "$TMP_BIN" || die "$EXIT_INSTALL" "cannot copy $SRC_BIN to $TMP_BIN"
    chmod 0755 "$TMP_BIN" || die "$EXIT_INSTALL" "cannot chmod $TMP_BIN"
    sync "$TMP_BIN" 2>/dev/null || sync
    if [ -d "$_dst" ]; then
        # A symlink to a directory: mv would move into it; drop the link first.
        rm -f "$_dst" || die "$EXIT_INSTALL" "cannot remove $_dst"
    fi
    mv -f "$TMP_BIN" "$_dst" || die "$EXIT_INSTALL" "cannot rename $TMP_BIN to $_dst"
    TMP_BIN=
    note "$_state" cnibox
}

install_link() {
    _name=$1
    _dst=$DEST/$_name
    if [ -L "$_dst" ] && [ "$(readlink "$_dst")" = cnibox ]; then
        note unchanged "$_name"
        return 0
    fi

    _state=new
    if [ -L "$_dst" ]; then
        _state=updated
    elif [ -d "$_dst" ]; then
        die "$EXIT_INSTALL" "$_dst is a directory; refusing to replace it"
    elif [ -e "$_dst" ]; then
        _state=updated
        info "replacing existing file $_dst with a link to cnibox"
    fi

    # Relative link made under a temp name, then renamed over the old name:
    # never "file exists", never a moment without a $_name.
    TMP_LINK=$DEST/.$_name.tmp.$$
    rm -f "$TMP_LINK"
    ln -s cnibox "$TMP_LINK" || die "$EXIT_INSTALL" "cannot create symlink $TMP_LINK"
    if [ -L "$_dst" ] && [ -d "$_dst" ]; then
        # A symlink to a directory: mv would move into it; drop the link first.
        rm -f "$_dst" || die "$EXIT_INSTALL" "cannot remove $_dst"
    fi
    mv -f "$TMP_LINK" "$_dst" || die "$EXIT_INSTALL" "cannot rename $TMP_LINK to $_dst"
    TMP_LINK=
    note "$_state" "$_name"
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
    info "installed into $DEST: $(count "$NEW") new, $(count "$UPDATED") updated, $(count "$UNCHANGED") unchanged"
    summary_line new "$NEW"
    summary_line updated "$UPDATED"
    summary_line unchanged "$UNCHANGED"
}

# ---------------------------------------------------------------- verify

# cni_run COMMAND STDIN: run the installed loopback applet with a clean
# environment; stdout goes to $WORK_DIR/out, stderr to $WORK_DIR/err.
cni_run() {
    printf '%s' "$2" | env -i \
        PATH="${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}" \
        ${CNI_LOG_LEVEL:+"CNI_LOG_LEVEL=$CNI_LOG_LEVEL"} \
        CNI_COMMAND="$1" \
        CNI_CONTAINERID=install-check \
        CNI_NETNS="/run/netns/$NETNS" \
        CNI_IFNAME=lo \
        CNI_PATH="$DEST" \
        "$DEST/loopback" >"$WORK_DIR/out" 2>"$WORK_DIR/err"
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
    printf '%s\n' "$APPLETS" | grep -qx loopback ||
        die "$EXIT_VERIFY" "this cnibox has no loopback applet to verify with; use --no-verify-run"
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
    info "verified: $DEST/loopback works"
}

# ---------------------------------------------------------------- main

main() {
    parse_args "$@"
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
