#!/usr/bin/env bash
# benches/host-local.sh: times one host-local ADD+DEL pair through the binary on a /16 that
# already holds 0, 1,000 and 10,000 reservations, and prints per-case medians and the ratio to
# the empty case, for cnibox and (if installed) the Go host-local side by side.
#
# The cost must stay flat: cnibox's 10,000 case within 1.5x of the empty one (exit 1 if not).
#
# Env: CNIBOX_BIN (default target/x86_64-unknown-linux-musl/release/cnibox),
#      GO_HOST_LOCAL (default /usr/lib/cni/host-local; set it empty to skip Go),
#      RUNS (rounds of one pair per case, default 200), GO_RUNS (default 40),
#      MAX_RATIO (default 1.5).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${CNIBOX_BIN:-target/x86_64-unknown-linux-musl/release/cnibox}
GO=${GO_HOST_LOCAL-/usr/lib/cni/host-local}
RUNS=${RUNS:-200}
GO_RUNS=${GO_RUNS:-40}
MAX_RATIO=${MAX_RATIO:-1.5}
COUNTS=(0 1000 10000)

[ -x "$BIN" ] || {
    echo "no cnibox binary at $BIN (cargo build --release --target x86_64-unknown-linux-musl, or set CNIBOX_BIN)" >&2
    exit 2
}
if [ -n "$GO" ] && [ ! -x "$GO" ]; then
    echo "note: $GO not found, timing cnibox only" >&2
    GO=
fi

tmp=$(mktemp -d /tmp/cnibox-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin"
ln -s "$(realpath "$BIN")" "$tmp/bin/host-local"

# populate DATA_DIR N: N reservation files as host-local writes them, 10.100.1.1 onwards, and
# last_reserved_ip.0 after the last, so the timed ADDs continue behind them.
populate() {
    local dir=$1/bench n=$2 i ip=
    mkdir -p "$dir"
    for ((i = 0; i < n; i++)); do
        ip=10.100.$((1 + i / 250)).$((1 + i % 250))
        printf 'pre%06d\r\neth0' "$i" >"$dir/$ip"
    done
    [ -z "$ip" ] || printf '%s' "$ip" >"$dir/last_reserved_ip.0"
    # Write them back now rather than in the middle of the timed runs.
    sync -f "$dir"
}

# pair PLUGIN DATA_DIR ID: one ADD and one DEL; prints the microseconds they took.
pair() {
    local plugin=$1 data=$2 id=$3 t0 t1 conf
    conf="{\"cniVersion\":\"1.0.0\",\"name\":\"bench\",\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$data\",\"ranges\":[[{\"subnet\":\"10.100.0.0/16\"}]]}}"
    t0=${EPOCHREALTIME/[.,]/}
    CNI_COMMAND=ADD CNI_CONTAINERID=$id CNI_NETNS=/run/netns/cnibox-bench-none CNI_IFNAME=eth0 \
        CNI_PATH=$tmp/bin "$plugin" <<<"$conf" >"$tmp/out" || {
        echo "ADD failed:" >&2
        cat "$tmp/out" >&2
        exit 2
    }
    CNI_COMMAND=DEL CNI_CONTAINERID=$id CNI_IFNAME=eth0 CNI_PATH=$tmp/bin "$plugin" <<<"$conf" >"$tmp/out" || {
        echo "DEL failed:" >&2
        cat "$tmp/out" >&2
        exit 2
    }
    t1=${EPOCHREALTIME/[.,]/}
    echo $((t1 - t0))
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# bench NAME PLUGIN RUNS: times RUNS rounds, each one pair per case in turn (so that noise from
# the rest of the machine hits every case alike); leaves one file of timings per case.
bench() {
    local name=$1 plugin=$2 runs=$3 n r
    for n in "${COUNTS[@]}"; do
        populate "$tmp/$name-$n" "$n"
        # Untimed: the first cnibox call after files appeared behind its back rebuilds its
        # owner index (reading every file once, as the Go plugin does on every call).
        pair "$plugin" "$tmp/$name-$n" warmup >/dev/null
        : >"$tmp/$name-$n.times"
    done
    for ((r = 0; r < runs; r++)); do
        for n in "${COUNTS[@]}"; do
            pair "$plugin" "$tmp/$name-$n" "bench-$r" >>"$tmp/$name-$n.times"
        done
    done
}

declare -A ours theirs
echo "timing cnibox ($RUNS rounds)" >&2
bench ours "$tmp/bin/host-local" "$RUNS"
for n in "${COUNTS[@]}"; do
    ours[$n]=$(median <"$tmp/ours-$n.times")
    rm -rf "$tmp/ours-$n"
done
if [ -n "$GO" ]; then
    echo "timing Go ($GO_RUNS rounds)" >&2
    bench go "$GO" "$GO_RUNS"
    for n in "${COUNTS[@]}"; do
        theirs[$n]=$(median <"$tmp/go-$n.times")
        rm -rf "$tmp/go-$n"
    done
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk -v a="$1" 'BEGIN { printf "%.2f", a / 1000 }'; }

echo
echo "host-local ADD+DEL pair, median of $RUNS (cnibox) / $GO_RUNS (Go) rounds, /16 network"
printf '%-14s %14s %8s' "reservations" "cnibox ms" "ratio"
[ -z "$GO" ] || printf ' %14s %8s' "Go ms" "ratio"
echo
for n in "${COUNTS[@]}"; do
    printf '%-14s %14s %8s' "$n" "$(ms "${ours[$n]}")" "$(ratio "${ours[$n]}" "${ours[0]}")"
    [ -z "$GO" ] || printf ' %14s %8s' "$(ms "${theirs[$n]}")" "$(ratio "${theirs[$n]}" "${theirs[0]}")"
    echo
done

worst=$(ratio "${ours[10000]}" "${ours[0]}")
if awk -v r="$worst" -v m="$MAX_RATIO" 'BEGIN { exit !(r <= m) }'; then
    echo "flat: 10,000 reservations cost ${worst}x the empty case (limit ${MAX_RATIO}x)"
else
    echo "NOT flat: 10,000 reservations cost ${worst}x the empty case (limit ${MAX_RATIO}x)"
    exit 1
fi
