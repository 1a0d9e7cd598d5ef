#!/usr/bin/env bash
# benches/compare-go.sh: cnibox against Debian's Go plugins, side by side, on bridge +
# host-local (the pair most clusters run):
#
#   ADD, DEL   one container each, a fresh container namespace per run, RUNS runs, median;
#              plus the kernel's own veth deletion, the floor under any DEL;
#   peak RSS   of one ADD (/usr/bin/time -v; for Go it includes the host-local child);
#   parallel   PARALLEL ADDs at once into PARALLEL namespaces on one bridge, wall time;
#   size       the one cnibox binary against the total of the Go plugins.
#
# Everything runs in throwaway namespaces: each implementation gets its own "host" namespace
# (the bridge, the host veths, the sysctls live there) entered with nsenter, so the plugins
# are timed without `ip netns exec`'s mount work, and never touch this machine's namespace.
#
# Prints the ratios Go/cnibox and whether each target holds (ADD >= 5x, DEL >= 1.5x, RSS
# <= 1/3, parallel >= 3x, size >= 15x); exits 1 if one does not.
#
# SETTLE=S starts each timed ADD and DEL after S seconds of quiet (default 0: back to back).
# Back to back, a DEL pays for kernel work its own ADD left running (RCU callbacks, link
# events), which a slower ADD has already waited out: so measured, cnibox's DEL once looked
# 3 ms slower than Go's (21.6 against 18.6 ms); with SETTLE=0.05 it is 5 ms faster (21.2
# against 26.7). Settling costs the ADDs of both a cold start, cnibox's more in proportion.
#
# Env: CNIBOX_BIN (default target/x86_64-unknown-linux-musl/release/cnibox),
#      GO_DIR (default /usr/lib/cni), RUNS (default 20), ROUNDS (blocks the sequential runs
#      alternate in, default 4), PARALLEL (default 50), SETTLE (default 0).
# Needs root, iproute2, nsenter (util-linux) and /usr/bin/time (apt-get install time).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${CNIBOX_BIN:-target/x86_64-unknown-linux-musl/release/cnibox}
GO_DIR=${GO_DIR:-/usr/lib/cni}
RUNS=${RUNS:-20}
ROUNDS=${ROUNDS:-4}
PARALLEL=${PARALLEL:-50}
SETTLE=${SETTLE:-0}

MODE=${1:-}
if [ -z "$MODE" ]; then
    [ "$(id -u)" = 0 ] || {
        echo "compare-go.sh needs root (network namespaces)" >&2
        exit 2
    }
    [ -x "$BIN" ] || {
        echo "no cnibox binary at $BIN (cargo build --release --target x86_64-unknown-linux-musl, or set CNIBOX_BIN)" >&2
        exit 2
    }
    for p in bridge host-local; do
        [ -x "$GO_DIR/$p" ] || {
            echo "no Go $p in $GO_DIR (apt-get install containernetworking-plugins)" >&2
            exit 2
        }
    done
    if [ ! -x /usr/bin/time ]; then
        echo "installing GNU time for /usr/bin/time -v" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
    command -v nsenter >/dev/null || {
        echo "nsenter (util-linux) is missing" >&2
        exit 2
    }

    tmp=$(mktemp -d /tmp/cnibox-compare.XXXXXX)
    # The plugins' stdout goes to files in RAM: a runtime reads it from a pipe, and a file on
    # disk (ext4 here) costs ~0.2 ms per call in truncation and flush-on-close, the same for
    # both implementations but inside the timed span. The IPAM data stays on disk, as on a node.
    out=$(mktemp -d /dev/shm/cnibox-compare.XXXXXX 2>/dev/null || mktemp -d /tmp/cnibox-out.XXXXXX)
    PREFIX=cnbbench-$$
    # shellcheck disable=SC2317 # run by the trap
    cleanup() {
        local ns
        for ns in $(ip netns list | awk -v p="$PREFIX" 'index($1, p) == 1 { print $1 }'); do
            ip netns delete "$ns" 2>/dev/null || true
        done
        rm -rf "$tmp" "$out"
    }
    trap cleanup EXIT

    mkdir "$tmp/bin"
    ln -s "$(realpath "$BIN")" "$tmp/bin/cnibox"
    for a in bridge host-local; do ln -s cnibox "$tmp/bin/$a"; done
fi

conf() { # conf IMPL: the network config, host-local data kept per implementation
    printf '{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"cnbench0","isGateway":true,"ipam":{"type":"host-local","subnet":"10.99.0.0/16","dataDir":"%s/ipam-%s"}}' "$tmp" "$1"
}
# Made once per implementation: a `$(conf ...)` per call would fork a subshell inside the
# timed span, about a millisecond that neither plugin spends.
declare -A CONF
for impl in rs go; do CONF[$impl]=$(conf "$impl"); done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# in_host IMPL CMD...: runs CMD inside IMPL's host namespace (network only, same mounts).
in_host() {
    local impl=$1
    shift
    nsenter --net="/run/netns/$PREFIX-host-$impl" "$@"
}

# plugin IMPL COMMAND ID NETNS: one bridge call, stdout to $out/out.
plugin() {
    local impl=$1 cmd=$2 id=$3 netns=$4 dir=$tmp/bin
    [ "$impl" = go ] && dir=$GO_DIR
    CNI_COMMAND=$cmd CNI_CONTAINERID=$id CNI_NETNS=$netns CNI_IFNAME=eth0 CNI_PATH=$dir \
        "$dir/bridge" <<<"${CONF[$impl]}" >"$out/out"
}

# settle: SETTLE seconds of quiet; nothing at all (not even a `sleep` process) when it is 0.
settle() { [ "$SETTLE" = 0 ] || sleep "$SETTLE"; }

fail_run() {
    echo "$1 failed:" >&2
    cat "$out/out" >&2
    exit 2
}

# The inner part runs inside a host namespace (see below): times RUNS ADD and DEL pairs,
# each in a fresh container namespace, and prints "add_us del_us" medians.
# Runs FIRST .. FIRST+COUNT-1 of one implementation (run -1 warms up: it makes the bridge),
# appending "add_us del_us" per run to $tmp/seq-IMPL.
if [ "${1:-}" = --inner-sequential ]; then
    impl=$2 first=$3 count=$4
    last=$((first + count))
    for ((r = first; r < last; r++)); do ip netns add "$PREFIX-$impl-s$((r + 1))"; done
    for ((r = first; r < last; r++)); do
        ns=$PREFIX-$impl-s$((r + 1))
        settle
        t0=${EPOCHREALTIME/[.,]/}
        plugin "$impl" ADD "seq-$r" "/run/netns/$ns" || fail_run "$impl ADD"
        t1=${EPOCHREALTIME/[.,]/}
        settle
        t2=${EPOCHREALTIME/[.,]/}
        plugin "$impl" DEL "seq-$r" "/run/netns/$ns" || fail_run "$impl DEL"
        t3=${EPOCHREALTIME/[.,]/}
        [ "$r" -lt 0 ] || echo "$((t1 - t0)) $((t3 - t2))" >>"$tmp/seq-$impl"
    done
    exit 0
fi

if [ "${1:-}" = --inner-parallel ]; then
    impl=$2
    for ((i = 0; i < PARALLEL; i++)); do ip netns add "$PREFIX-$impl-p$i"; done
    t0=${EPOCHREALTIME/[.,]/}
    pids=()
    for ((i = 0; i < PARALLEL; i++)); do
        dir=$tmp/bin
        [ "$impl" = go ] && dir=$GO_DIR
        CNI_COMMAND=ADD CNI_CONTAINERID=par-$i CNI_NETNS=/run/netns/$PREFIX-$impl-p$i \
            CNI_IFNAME=eth0 CNI_PATH=$dir "$dir/bridge" <<<"${CONF[$impl]}" >"$out/par-$impl-$i" &
        pids+=($!)
    done
    bad=0
    for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
    t1=${EPOCHREALTIME/[.,]/}
    [ "$bad" = 0 ] || {
        echo "$impl: $bad parallel ADDs failed:" >&2
        cat "$out"/par-"$impl"-* >&2
        exit 2
    }
    for ((i = 0; i < PARALLEL; i++)); do
        dir=$tmp/bin
        [ "$impl" = go ] && dir=$GO_DIR
        CNI_COMMAND=DEL CNI_CONTAINERID=par-$i CNI_NETNS=/run/netns/$PREFIX-$impl-p$i \
            CNI_IFNAME=eth0 CNI_PATH=$dir "$dir/bridge" <<<"${CONF[$impl]}" >/dev/null
    done
    echo $((t1 - t0))
    exit 0
fi

if [ "${1:-}" = --inner-rss ]; then
    impl=$2
    ns=$PREFIX-$impl-rss
    ip netns add "$ns"
    dir=$tmp/bin
    [ "$impl" = go ] && dir=$GO_DIR
    CNI_COMMAND=ADD CNI_CONTAINERID=rss CNI_NETNS=/run/netns/$ns CNI_IFNAME=eth0 CNI_PATH=$dir \
        /usr/bin/time -v -o "$tmp/time-$impl" "$dir/bridge" <<<"${CONF[$impl]}" >"$out/out" ||
        fail_run "$impl ADD under /usr/bin/time"
    plugin "$impl" DEL rss "/run/netns/$ns" || fail_run "$impl DEL"
    awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$tmp/time-$impl"
    exit 0
fi

# The kernel's veth deletion, the floor under any DEL: a pair made as the plugins make it
# (container end in a fresh namespace, peer in the host one, on the bridge), deleted with
# `ip link del`, minus what the same `ip` costs doing nothing.
if [ "${1:-}" = --inner-floor ]; then
    dels=() bases=()
    for ((r = 0; r < RUNS; r++)); do ip netns add "$PREFIX-floor-$r"; done
    for ((r = 0; r < RUNS; r++)); do
        ns=$PREFIX-floor-$r
        ip link add "cnbfl$r" type veth peer name eth0 netns "$ns"
        ip link set "cnbfl$r" master cnbench0 up
        ip -n "$ns" link set eth0 up
        t0=${EPOCHREALTIME/[.,]/}
        nsenter --net="/run/netns/$ns" ip link show lo >/dev/null
        t1=${EPOCHREALTIME/[.,]/}
        nsenter --net="/run/netns/$ns" ip link del eth0
        t2=${EPOCHREALTIME/[.,]/}
        bases+=($((t1 - t0)))
        dels+=($((t2 - t1)))
    done
    d=$(printf '%s\n' "${dels[@]}" | median)
    b=$(printf '%s\n' "${bases[@]}" | median)
    echo $((d > b ? d - b : 0))
    exit 0
fi

# No namespace is deleted before the end: the kernel tears a deleted namespace down in the
# background, holding locks that whatever runs next would wait for.
for impl in rs go; do
    ip netns add "$PREFIX-host-$impl"
    ip -n "$PREFIX-host-$impl" link set lo up
done

self=$(realpath "${BASH_SOURCE[0]}")
inner() { # inner IMPL MODE [ARGS...]
    local impl=$1 mode=$2
    shift 2
    in_host "$impl" env PREFIX="$PREFIX" tmp="$tmp" out="$out" SETTLE="$SETTLE" RUNS="$RUNS" PARALLEL="$PARALLEL" \
        CNIBOX_BIN="$BIN" GO_DIR="$GO_DIR" bash "$self" "--inner-$mode" "$impl" "$@"
}

# The sequential runs alternate between the two in ROUNDS blocks, so that both see the same
# background load (others' work on a shared machine moves these figures by milliseconds).
declare -A add del rss par
per=$(((RUNS + ROUNDS - 1) / ROUNDS))
for ((k = 0; k * per < RUNS; k++)); do
    first=$((k * per)) count=$((RUNS - k * per < per ? RUNS - k * per : per))
    [ "$k" -gt 0 ] || { first=-1 count=$((count + 1)); }
    for impl in rs go; do
        echo "$impl: sequential ADD/DEL pairs, block $((k + 1))" >&2
        inner "$impl" sequential "$first" "$count"
    done
done
for impl in rs go; do
    add[$impl]=$(cut -d' ' -f1 "$tmp/seq-$impl" | median)
    del[$impl]=$(cut -d' ' -f2 "$tmp/seq-$impl" | median)
done
for impl in rs go; do
    echo "$impl: peak RSS of one ADD" >&2
    rss[$impl]=$(inner "$impl" rss)
    echo "$impl: $PARALLEL parallel ADDs" >&2
    par[$impl]=$(inner "$impl" parallel)
done
echo "kernel: veth deletion floor" >&2
floor=$(inner rs floor)
size_rs=$(stat -L -c %s "$BIN")
size_go=$(find "$GO_DIR" -maxdepth 1 -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
count_go=$(find "$GO_DIR" -maxdepth 1 -type f | wc -l)

ms() { awk -v a="$1" 'BEGIN { printf "%.2f ms", a / 1000 }'; }
mb() { awk -v a="$1" 'BEGIN { printf "%.1f MB", a / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", (b > 0) ? a / b : 0 }'; }
meets() { awk -v r="$1" -v m="$2" 'BEGIN { exit !(r >= m) }'; }
verdict() { # verdict RATIO_GO_OVER_OURS MIN
    if meets "$1" "$2"; then echo "ok (>= ${2}x)"; else echo "MISSED (< ${2}x)"; fi
}

r_add=$(awk -v a="${add[go]}" -v b="${add[rs]}" 'BEGIN { print a / b }')
r_del=$(awk -v a="${del[go]}" -v b="${del[rs]}" 'BEGIN { print a / b }')
r_rss=$(awk -v a="${rss[go]}" -v b="${rss[rs]}" 'BEGIN { print a / b }')
r_par=$(awk -v a="${par[go]}" -v b="${par[rs]}" 'BEGIN { print a / b }')
r_size=$(awk -v a="$size_go" -v b="$size_rs" 'BEGIN { print a / b }')

echo
echo "bridge + host-local, cniVersion 1.0.0, isGateway; median of $RUNS runs, fresh namespace each, ${SETTLE}s quiet before each"
printf '%-26s %14s %14s %9s  %s\n' "" "cnibox" "Go" "Go/cnibox" "target"
row() { printf '%-26s %14s %14s %9s  %s\n' "$1" "$2" "$3" "$4" "$5"; }
row "ADD" "$(ms "${add[rs]}")" "$(ms "${add[go]}")" "$(ratio "${add[go]}" "${add[rs]}")" "$(verdict "$r_add" 5)"
row "DEL" "$(ms "${del[rs]}")" "$(ms "${del[go]}")" "$(ratio "${del[go]}" "${del[rs]}")" "$(verdict "$r_del" 1.5)"
row "  kernel veth deletion" "$(ms "$floor")" "$(ms "$floor")" "" "(floor under both DELs)"
above_rs=$((del[rs] > floor ? del[rs] - floor : 0))
above_go=$((del[go] > floor ? del[go] - floor : 0))
above_ratio=n/a
[ "$above_rs" = 0 ] || [ "$above_go" = 0 ] || above_ratio=$(ratio "$above_go" "$above_rs")
row "  DEL above the floor" "$(ms "$above_rs")" "$(ms "$above_go")" "$above_ratio" ""
row "peak RSS of one ADD" "$(mb "${rss[rs]}")" "$(mb "${rss[go]}")" "$(ratio "${rss[go]}" "${rss[rs]}")" "$(verdict "$r_rss" 3)"
row "$PARALLEL parallel ADDs" "$(ms "${par[rs]}")" "$(ms "${par[go]}")" "$(ratio "${par[go]}" "${par[rs]}")" "$(verdict "$r_par" 3)"
row "on-disk size" "$(mb $((size_rs / 1024)))" "$(mb $((size_go / 1024)))" "$(ratio "$size_go" "$size_rs")" "$(verdict "$r_size" 15)"
echo "(size: the one cnibox binary against the $count_go Go plugins in $GO_DIR)"
missed=0
for pair in "$r_add 5" "$r_del 1.5" "$r_rss 3" "$r_par 3" "$r_size 15"; do
    # shellcheck disable=SC2086 # two words on purpose
    meets $pair || missed=1
done
exit "$missed"
