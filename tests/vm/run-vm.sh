#!/usr/bin/env bash
# tests/vm/run-vm.sh: the full-kernel VM lane (tests/run.sh runs it).
#
# The kernels this project is developed and tested on lack the dummy, vlan,
# ipvlan and vrf link kinds and bridge VLAN filtering, and cannot load
# modules. This lane boots Debian's cloud kernel under qemu (software
# emulation, -cpu max; KVM does not work on these machines) and runs tests
# inside it, all in one boot. Any test can run there, but under emulation a
# process start costs ~20-60 ms and an `ip` call ~100 ms, so the whole suite
# takes 10-20 minutes on 2 cores: by default the lane runs the tests that
# recorded themselves as needing it (see CNIBOX_VM_SELECT below).
#
#  1. kernel: `apt-get download` the package linux-image-cloud-amd64 depends
#     on, dpkg -x + depmod into target/vm-cache/kernel/<pkg>_<version>/
#     (reused across runs; older versions are pruned);
#  2. select and build: which tests run (below), then the static release
#     cnibox and those test executables for the musl target (so they need no
#     glibc in the VM), their paths learnt from cargo's JSON;
#  3. initramfs: busybox + applet links, the network kernel modules (with
#     their modules.dep closure), cnibox, the tests, and the host tools the
#     tests call (ip, bridge, iptables*, nft, the Go plugins in /usr/lib/cni,
#     and the shared libraries ldd lists for them), plus tests/vm/init;
#  4. boot qemu with the console on stdout, teed into target/vm/console.log;
#     the init prints `VM-RESULT <binary> <exit code>` per test binary;
#  5. turn those markers into a summary (target/vm/summary.txt) and the exit
#     status: 0 only if every binary reported exit 0, all modules loaded, no
#     namespace leaked, and the VM reached its end (no timeout, no panic).
#
# Env:
#   CNIBOX_VM_TIMEOUT=SECS       whole boot (default 900)
#   CNIBOX_VM_TEST_TIMEOUT=SECS  one test binary inside the VM (default 300)
#   CNIBOX_VM_THREADS=N          libtest --test-threads (default 2)
#   CNIBOX_VM_MEM=MB             guest memory (default 1024)
#   CNIBOX_VM_SELECT=needed|all  what runs. needed (default): the tests that
#                                recorded in target/vm-needed/<binary>/<test>
#                                that the host kernel cannot run them, which
#                                tests/common's require_link_kind,
#                                require_bridge_vlan_filtering and
#                                require_vm_lane do when the host's cargo test
#                                skips them (the whole suite if nothing is
#                                recorded yet). all: every test of every binary.
#   CNIBOX_VM_BINARIES="a b"     run every test of these binaries (names as in
#                                the summary: tests/*.rs names, cnibox-unit)
#   CNIBOX_VM_TEST_ARGS="..."    extra libtest arguments, e.g. a name filter
#   CNIBOX_SKIP_APT=1            never run apt-get update (offline boxes)

# The whole script is one { ... } block: bash parses it completely before
# running it, so editing this file cannot derail a lane already running.
{
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd -P)

TARGET=x86_64-unknown-linux-musl
BIN=$ROOT/target/$TARGET/release/cnibox
CACHE=$ROOT/target/vm-cache
OUT=$ROOT/target/vm
STAGE=$CACHE/rootfs
LOG=$OUT/console.log
SUMMARY=$OUT/summary.txt
KERNEL_META=linux-image-cloud-amd64
GO_DIR=/usr/lib/cni

VM_TIMEOUT=${CNIBOX_VM_TIMEOUT:-900}
TEST_TIMEOUT=${CNIBOX_VM_TEST_TIMEOUT:-300}
BUDGET=300 # seconds the whole lane should take
THREADS=${CNIBOX_VM_THREADS:-2}
MEM=${CNIBOX_VM_MEM:-1024}

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
[ -d "$HOME/.cargo/bin" ] && export PATH=$HOME/.cargo/bin:$PATH
export CARGO_TERM_COLOR=never

# Modules the init loads at boot. Everything under kernel/net and
# kernel/drivers/net is packed too (with dependencies), so what the tools
# autoload through /sbin/modprobe is there as well.
BOOT_MODULES=(
    virtio_pci virtio_rng
    veth dummy 8021q macvlan macvtap ipvlan ipvtap vrf bridge br_netfilter
    vxlan ifb tun
    sch_tbf sch_ingress sch_htb cls_u32 act_mirred
    nf_conntrack nf_nat nf_tables nft_compat nft_chain_nat nft_nat nft_masq
    nft_ct nft_redir nft_fib_inet nft_reject_inet
    ip_tables ip6_tables iptable_filter iptable_nat iptable_mangle iptable_raw
    ip6table_filter ip6table_nat ip6table_mangle ip6table_raw
    xt_MASQUERADE xt_comment xt_mark xt_conntrack xt_addrtype xt_multiport
    xt_nat xt_CHECKSUM xt_tcpudp
)
# Module trees packed whole (their modules.dep closure is added).
MODULE_TREES=(kernel/net kernel/drivers/net)
# Host tools the tests run, with every name they are called by.
# dash becomes /bin/sh: busybox's sh runs its own applets (ip, tc, ...)
# before PATH, so a test's `#!/bin/sh` wrapper would get busybox's ip.
HOST_TOOLS=(
    dash bash
    ip bridge tc ss nft
    iptables ip6tables iptables-save ip6tables-save iptables-restore
    ip6tables-restore iptables-nft ip6tables-nft iptables-legacy
    ip6tables-legacy ebtables arptables
)

T0=$SECONDS
log() { printf '[vm] %s\n' "$*"; }
die() {
    printf '[vm] FAIL: %s\n' "$*" >&2
    exit 1
}
elapsed() { printf '%ss' "$((SECONDS - T0))"; }

need() {
    local tool=$1 pkg=$2
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: apt-get install $pkg (tests/run.sh installs it)"
}

# ------------------------------------------------------------------ 1. kernel

# Prints the cached kernel root (dir holding boot/ and lib/modules/).
kernel_root() {
    local pkg ver dir deb tmp
    pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
        awk '/Depends: linux-image-/ {print $2; exit}') || true
    if [ -z "$pkg" ] && [ "${CNIBOX_SKIP_APT:-0}" != 1 ]; then
        log "apt knows no $KERNEL_META yet: apt-get update" >&2
        apt-get update -qq >&2 || true
        pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
            awk '/Depends: linux-image-/ {print $2; exit}') || true
    fi
    if [ -n "$pkg" ]; then
        ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2; exit}')
        dir=$CACHE/kernel/${pkg}_${ver//:/%3a}
        if [ ! -f "$dir/.ready" ]; then
            log "fetching $pkg $ver with apt-get download" >&2
            mkdir -p "$CACHE/debs"
            rm -f "$CACHE/debs/"*.deb
            if (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2); then
                deb=$(ls "$CACHE/debs/${pkg}_"*.deb)
                tmp=$CACHE/kernel/.new.$$
                rm -rf "$tmp"
                mkdir -p "$tmp"
                dpkg -x "$deb" "$tmp"
                local kver
                kver=$(ls "$tmp/lib/modules")
                depmod -b "$tmp" "$kver"
                touch "$tmp/.ready"
                rm -rf "$dir"
                mv "$tmp" "$dir"
                rm -f "$deb"
                # Keep only this kernel in the cache.
                find "$CACHE/kernel" -mindepth 1 -maxdepth 1 ! -path "$dir" -exec rm -rf {} +
            else
                log "apt-get download $pkg=$ver failed" >&2
            fi
        fi
        if [ -f "$dir/.ready" ]; then
            echo "$dir"
            return
        fi
    fi
    # apt could not give us a kernel: fall back to a cached one, loudly.
    dir=$(find "$CACHE/kernel" -mindepth 2 -maxdepth 2 -name .ready -printf '%h\n' 2>/dev/null |
        sort | tail -n1)
    [ -n "$dir" ] || die "cannot get the Debian cloud kernel: apt-cache depends $KERNEL_META gave '${pkg:-nothing}' and nothing is cached in $CACHE/kernel"
    log "WARNING: apt gave no kernel package; using the cached $(basename "$dir")" >&2
    echo "$dir"
}

# ------------------------------------------------------------------ 3. initramfs helpers

# The initramfs has a merged /usr (bin -> usr/bin, lib -> usr/lib, ...) like
# Debian 12, so a host path can be used as is below $STAGE.

# put SRC [DEST]: copy a host file (following links) into the initramfs.
put() {
    local dst=${2:-$1}
    dst=${dst#/}
    mkdir -p "$STAGE/$(dirname "$dst")"
    rm -f "$STAGE/$dst" # may be a busybox link: never write through it
    cp -L "$1" "$STAGE/$dst"
}

# put_libs FILE...: the shared libraries ldd lists for the files.
put_libs() {
    local f lib
    for f in "$@"; do
        ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
    done | sort -u | while read -r lib; do
        [ -e "$STAGE$lib" ] || put "$lib"
    done
}

# ------------------------------------------------------------------ main

mkdir -p "$OUT" "$CACHE"
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need depmod kmod
need busybox busybox-static
need apt-get apt
need dpkg dpkg
need jq jq
need ldd libc-bin
need cargo "a rustup toolchain"
need flock util-linux
BUSYBOX=$(command -v busybox)
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked: apt-get install busybox-static"
fi
# The host tools inside the VM are this host's binaries: they need an x86-64 guest.
[ "$(uname -m)" = x86_64 ] || die "the VM lane needs an x86_64 host (this is $(uname -m))"

# One lane at a time per tree: runs share the kernel cache, the staging dir,
# the image and the log (and two TCG guests on two cores only slow both).
exec 9>"$CACHE/lock"
if ! flock -n 9; then
    log "another VM lane runs in this tree (pid $(cat "$CACHE/lock.pid" 2>/dev/null || echo '?')); waiting for it"
    flock 9
fi
echo $$ >"$CACHE/lock.pid"

log "1/5 kernel"
KROOT=$(kernel_root)
KVER=$(ls "$KROOT/lib/modules")
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "$VMLINUZ missing in the kernel package"
log "kernel $KVER from $KROOT ($(elapsed))"

log "2/5 select and build (musl: static cnibox, test executables)"
cargo build --release --target "$TARGET"
[ -x "$BIN" ] || die "$BIN missing after build"

# Test binaries by name (tests/<name>.rs; a bin's or lib's own unit tests as
# <name>-unit / <name>-lib), each with the cargo flag that builds it and the
# directory name the tests record themselves under in target/vm-needed.
declare -A CARGO_FLAG=() RECKEY=()
while read -r kind name; do
    case $kind in
        test) n=$name flag="--test $name" ;;
        bin) n=$name-unit flag="--bin $name" ;;
        lib) n=$name-lib flag="--lib" ;;
        *) continue ;;
    esac
    CARGO_FLAG[$n]=$flag
    RECKEY[$n]=${name//-/_}
done < <(cargo metadata --no-deps --format-version 1 |
    jq -r '.packages[0].targets[] | select(.test != false) | (.kind[0] + " " + .name)')

# What runs in the VM:
#   CNIBOX_VM_BINARIES="a b"  those binaries, all of their tests;
#   CNIBOX_VM_SELECT=all      every binary, every test (the whole suite);
#   default ("needed")        the tests that recorded in target/vm-needed/
#                             <binary>/<test> that the host kernel cannot run
#                             them (tests/common's require_* helpers do, when
#                             the host's cargo test skips them); the whole
#                             suite if nothing is recorded yet.
NEEDED=$ROOT/target/vm-needed
SELECT=${CNIBOX_VM_SELECT:-needed}
declare -A FILTER=()
SELECTED=()
if [ -n "${CNIBOX_VM_BINARIES:-}" ]; then
    for n in $CNIBOX_VM_BINARIES; do
        [ -n "${CARGO_FLAG[$n]:-}" ] || die "CNIBOX_VM_BINARIES: no test binary $n (have: ${!CARGO_FLAG[*]})"
        SELECTED+=("$n")
    done
    WHAT="CNIBOX_VM_BINARIES: every test of $CNIBOX_VM_BINARIES"
elif [ "$SELECT" = needed ] && compgen -G "$NEEDED/*/*" >/dev/null; then
    for n in "${!CARGO_FLAG[@]}"; do
        d=$NEEDED/${RECKEY[$n]}
        compgen -G "$d/*" >/dev/null || continue
        SELECTED+=("$n")
        FILTER[$n]="--exact $(cd "$d" && printf '%s ' *)"
    done
    WHAT="the tests the host recorded in $NEEDED as needing a full kernel (CNIBOX_VM_SELECT=all runs the whole suite)"
fi
if [ "${#SELECTED[@]}" -gt 0 ]; then
    :
elif [ "$SELECT" = needed ] || [ "$SELECT" = all ]; then
    SELECTED=("${!CARGO_FLAG[@]}")
    WHAT="the whole suite"
    [ "$SELECT" = needed ] && WHAT="$WHAT (nothing recorded in $NEEDED: run cargo test on the host first to select only what needs the VM)"
else
    die "CNIBOX_VM_SELECT=$SELECT: want needed or all"
fi
[ "${#SELECTED[@]}" -gt 0 ] || die "no test binary selected"
mapfile -t SELECTED < <(printf '%s\n' "${SELECTED[@]}" | sort)
log "running $WHAT"

TESTS_JSON=$OUT/tests.jsonl
flags=()
for n in "${SELECTED[@]}"; do
    read -ra f <<<"${CARGO_FLAG[$n]}"
    flags+=("${f[@]}")
done
# No debug info (it is stripped anyway; linking is faster without it).
CARGO_PROFILE_TEST_DEBUG=0 CARGO_PROFILE_DEV_DEBUG=0 \
    cargo test --target "$TARGET" --no-run --message-format=json-render-diagnostics "${flags[@]}" >"$TESTS_JSON" ||
    die "cargo test --target $TARGET --no-run ${flags[*]} failed"
# NAME PATH per selected test executable
declare -A EXE=()
while read -r n path; do
    EXE[$n]=$path
done < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
    | (if .target.kind[0] == "test" then .target.name elif .target.kind[0] == "lib" then .target.name + "-lib"
       else .target.name + "-unit" end) + " " + .executable' "$TESTS_JSON")
TEST_EXES=()
for n in "${SELECTED[@]}"; do
    [ -n "${EXE[$n]:-}" ] || die "cargo built no executable for $n"
    TEST_EXES+=("$n ${EXE[$n]}")
done
log "test binaries: ${SELECTED[*]} ($(elapsed))"

log "3/5 initramfs"
rm -rf "$STAGE"
mkdir -p "$STAGE"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,run,tmp,root,var/lib,tests,vm}
ln -s usr/bin "$STAGE/bin"
ln -s usr/sbin "$STAGE/sbin"
ln -s usr/lib "$STAGE/lib"
ln -s usr/lib64 "$STAGE/lib64"
ln -s ../run "$STAGE/var/run"
ln -s ../run/lock "$STAGE/var/lock"
chmod 1777 "$STAGE/tmp"

# busybox and its applet links (real tools copied below replace some)
put "$BUSYBOX" /usr/bin/busybox
while read -r a; do
    [ -e "$STAGE/$a" ] || [ -L "$STAGE/$a" ] || ln -s /usr/bin/busybox "$STAGE/$a"
done < <("$BUSYBOX" --list-full)

# host tools: each name the tests may call, as a link when the host has one
# to a shared multi-call binary (xtables-*-multi), plus their libraries
TOOL_FILES=()
for t in "${HOST_TOOLS[@]}"; do
    p=$(command -v "$t" 2>/dev/null) || continue
    real=$(readlink -f "$p")
    # busybox has applets of the same name (ip, tc, ...) in other bin dirs
    for d in usr/bin usr/sbin; do
        if [ "$(readlink "$STAGE/$d/$t")" = /usr/bin/busybox ]; then
            rm -f "$STAGE/$d/$t"
        fi
    done
    put "$real"
    TOOL_FILES+=("$real")
    if [ "$(basename "$real")" != "$t" ]; then
        rm -f "$STAGE$p"
        ln -s "$real" "$STAGE$p"
    fi
done
for t in dash ip nft iptables; do
    command -v "$t" >/dev/null || die "$t not found on the host; the tests need it in the VM"
done
rm -f "$STAGE/usr/bin/sh"
ln -s dash "$STAGE/usr/bin/sh"
put_libs "${TOOL_FILES[@]}"
for d in /usr/lib/x86_64-linux-gnu/xtables /etc/iproute2 /usr/share/iproute2 /usr/lib/iproute2; do
    if [ -d "$d" ]; then
        mkdir -p "$STAGE$d"
        cp -a "$d/." "$STAGE$d/"
    fi
done
[ -d /usr/lib/x86_64-linux-gnu/xtables ] && put_libs /usr/lib/x86_64-linux-gnu/xtables/*.so
for f in /etc/protocols /etc/services /etc/ethertypes /etc/rpc /etc/nftables.conf; do
    [ -f "$f" ] && put "$f"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$STAGE/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files\nprotocols: files\nservices: files\n' >"$STAGE/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$STAGE/etc/hosts"
echo cnibox-vm >"$STAGE/etc/hostname"

# the Go reference plugins (differential tests), dynamically linked on Debian
REQUIRE_GO=0
if compgen -G "$GO_DIR/*" >/dev/null; then
    mkdir -p "$STAGE$GO_DIR"
    cp -a "$GO_DIR/." "$STAGE$GO_DIR/"
    put_libs "$GO_DIR"/*
    REQUIRE_GO=1
else
    log "WARNING: $GO_DIR is empty: differential tests will skip in the VM (apt-get install containernetworking-plugins)"
fi

# cnibox and the tests (debug info stripped: it only makes the image bigger)
put "$BIN" /cnibox
STRIP=$(command -v strip || true)
: >"$STAGE/vm/tests"
for e in "${TEST_EXES[@]}"; do
    name=${e%% *}
    exe=${e#* }
    if [ -n "$STRIP" ]; then
        "$STRIP" --strip-debug -o "$STAGE/tests/$name" "$exe"
    else
        cp "$exe" "$STAGE/tests/$name"
    fi
    echo "$name /tests/$name ${FILTER[$name]:-}" >>"$STAGE/vm/tests"
done
# the tests run in the repo root as under cargo; give them its tests/ dir
mkdir -p "$STAGE$ROOT"
cp -a "$ROOT/tests" "$ROOT/Cargo.toml" "$STAGE$ROOT/"

# kernel modules: the boot list and the whole network trees, with deps
MODDIR=lib/modules/$KVER
declare -A DEP=() BYNAME=()
while IFS=: read -r mod deps; do
    DEP[$mod]=$deps
    n=$(basename "$mod" .ko)
    BYNAME[${n//-/_}]=$mod
done <"$KROOT/$MODDIR/modules.dep"
declare -A WANT=()
want_mod() {
    local m=$1 d
    [ -n "${WANT[$m]:-}" ] && return
    WANT[$m]=1
    for d in ${DEP[$m]}; do want_mod "$d"; done
}
for m in "${BOOT_MODULES[@]}"; do
    p=${BYNAME[${m//-/_}]:-}
    if [ -n "$p" ]; then
        want_mod "$p"
    elif grep -q "/${m}.ko\$\|/${m//_/-}.ko\$" "$KROOT/$MODDIR/modules.builtin"; then
        continue # built into this kernel
    else
        die "module $m is neither in $KVER's package nor built in (fix BOOT_MODULES in $0)"
    fi
done
for tree in "${MODULE_TREES[@]}"; do
    for m in "${!DEP[@]}"; do
        case $m in "$tree"/*) want_mod "$m" ;; esac
    done
done
mkdir -p "$STAGE/$MODDIR"
printf '%s\n' "${!WANT[@]}" modules.builtin modules.builtin.modinfo modules.order |
    (cd "$KROOT/$MODDIR" && cpio -pdm --quiet "$STAGE/$MODDIR")
depmod -b "$STAGE" "$KVER"
: >"$STAGE/vm/modules"
for m in "${BOOT_MODULES[@]}"; do
    [ -n "${BYNAME[${m//-/_}]:-}" ] && echo "$m" >>"$STAGE/vm/modules"
done

# the lane's settings for the init
{
    echo "CNIBOX_BIN=/cnibox"
    echo "CNIBOX_VM=1"
    [ "$REQUIRE_GO" = 1 ] && echo "CNIBOX_REQUIRE_GO=1"
    echo "CARGO_MANIFEST_DIR=$ROOT"
    echo "RUST_BACKTRACE=1"
} >"$STAGE/vm/env"
echo "--test-threads=$THREADS ${CNIBOX_VM_TEST_ARGS:-}" >"$STAGE/vm/test-args"
echo "$ROOT" >"$STAGE/vm/workdir"
echo "$TEST_TIMEOUT" >"$STAGE/vm/timeout"
cp "$ROOT/tests/vm/init" "$STAGE/init"
chmod 0755 "$STAGE/init"

INITRD=$OUT/initrd.cpio
(cd "$STAGE" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$INITRD"
log "initramfs: ${#WANT[@]} modules, $(du -sh "$STAGE" | cut -f1) unpacked, $(du -h "$INITRD" | cut -f1) image ($(elapsed))"

log "4/5 boot: qemu-system-x86_64 -cpu max (TCG), -smp 2, ${MEM}M, timeout ${VM_TIMEOUT}s; console -> $LOG"
BOOT0=$SECONDS
set +e
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 \
    -cpu max -m "$MEM" -smp 2 \
    -nographic -no-reboot -nic none \
    -device virtio-rng-pci \
    -kernel "$VMLINUZ" -initrd "$INITRD" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off" \
    </dev/null 2>&1 | sed -u 's/\r//g; s/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' | tee "$LOG"
QEMU_RC=${PIPESTATUS[0]}
set -e
BOOT_TIME=$((SECONDS - BOOT0))

log "5/5 results"
FAIL=0
{
    echo "VM lane: kernel $KVER, qemu exit $QEMU_RC, boot+tests ${BOOT_TIME}s, lane $((SECONDS - T0))s"
    if [ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ]; then
        echo "  VM TIMED OUT after ${VM_TIMEOUT}s (CNIBOX_VM_TIMEOUT)"
    fi
    if grep -q 'Kernel panic' "$LOG"; then
        echo "  KERNEL PANIC: $(grep -m1 'Kernel panic' "$LOG")"
    fi
    mods=$(awk '$1 == "VM-RESULT" && $2 == "modules" {print $3}' "$LOG" | tail -n1)
    if [ "$mods" = 0 ]; then
        echo "  modules               ok"
    else
        echo "  modules               FAIL (${mods:-no report}; see 'modprobe ... failed' in the log)"
    fi
    for e in "${TEST_EXES[@]}"; do
        name=${e%% *}
        rc=$(awk -v n="$name" '$1 == "VM-RESULT" && $2 == n {print $3}' "$LOG" | tail -n1)
        counts=$(awk -v n="$name" '
            $1 == "VM-BEGIN" && $2 == n {on = 1; next}
            $1 == "VM-RESULT" && $2 == n {on = 0}
            on && /^test result:/ {sub(/^test result: /, ""); sub(/ 0 measured;/, ""); r = $0}
            END {print r}' "$LOG")
        leaks=$(awk -v n="$name" '$1 == "VM-LEAK" && $2 == n {printf "%s ", $3}' "$LOG")
        if [ -z "$rc" ]; then
            printf '  %-21s NO RESULT (the VM ended before it finished)\n' "$name"
        elif [ "$rc" = 0 ] && [ -z "$leaks" ]; then
            printf '  %-21s ok   %s\n' "$name" "$counts"
        else
            case $rc in
                0) why="leaked namespaces: $leaks" ;;
                137) why="killed (timeout ${TEST_TIMEOUT}s?)" ;;
                *) why="exit $rc" ;;
            esac
            printf '  %-21s FAIL %s; %s\n' "$name" "$why" "$counts"
            [ -n "$leaks" ] && [ "$rc" != 0 ] && printf '  %-21s      leaked namespaces: %s\n' "" "$leaks"
            awk -v n="$name" '
                $1 == "VM-BEGIN" && $2 == n {on = 1; next}
                $1 == "VM-RESULT" && $2 == n {on = 0}
                on && /^test .* \.\.\. FAILED$/ {print $2}
                on && list && /^    [^ ]+$/ {print $1}
                on && /^failures:$/ {list = 1; next}
                on && /^$/ {list = 0}' "$LOG" | sort -u | sed 's/^/      failed: /'
        fi
    done
    grep -q '^VM-DONE$' "$LOG" || echo "  the VM never reported VM-DONE (timeout, panic or crash)"
} | tee "$SUMMARY"

grep -q '^VM-DONE$' "$LOG" || FAIL=1
grep -q '^VM-RESULT modules 0$' "$LOG" || FAIL=1
grep -q '^VM-LEAK ' "$LOG" && FAIL=1
for e in "${TEST_EXES[@]}"; do
    grep -qx "VM-RESULT ${e%% *} 0" "$LOG" || FAIL=1
done
if [ "$((SECONDS - T0))" -gt "$BUDGET" ]; then
    log "WARNING: the lane took $((SECONDS - T0))s, over its ${BUDGET}s budget (boot+tests ${BOOT_TIME}s); see the per-binary times above"
fi
if [ "$FAIL" != 0 ]; then
    log "VM lane FAILED ($(elapsed)); console log: $LOG, summary: $SUMMARY"
    exit 1
fi
log "VM lane passed ($(elapsed)); console log: $LOG"
exit 0
}
