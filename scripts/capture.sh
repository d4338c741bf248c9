#!/usr/bin/env bash
# Captures the loopback traffic of one lab run with dumpcap (or tshark), so
# that the real capture can be set beside the run's own rendering of its
# trace:
#
#   scripts/capture.sh OUTDIR [agentlab run args, without --out...]
#
# runs `agentlab run --out OUTDIR args...` while capturing, and leaves
# OUTDIR/capture.pcapng (what the kernel carried) next to
# OUTDIR/trace.pcapng (what the processes recorded). The capture filter keeps
# the lab's Policy Server ports on the lab's addresses, both read from the
# lab among the args: a lab file, or the name of a lab agentlab embeds
# (labs/NAME.yaml); labs/seed.yaml, the default lab, when there is none.
#
# AGENTLAB names the agentlab binary (default: bin/agentlab, from make build).
# Capturing needs root or dumpcap's capabilities (Debian: dpkg-reconfigure
# wireshark-common, then join the wireshark group); scripts/install-test-deps.sh
# installs the tools.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 1 ]; then
	echo "usage: $0 OUTDIR [agentlab run args...]" >&2
	exit 2
fi
out=$1
shift
agentlab=${AGENTLAB:-$here/bin/agentlab}
if [ ! -x "$agentlab" ]; then
	echo "capture: $agentlab not found: run make build, or set AGENTLAB" >&2
	exit 1
fi

if command -v dumpcap >/dev/null; then
	capturer=dumpcap
elif command -v tshark >/dev/null; then
	capturer=tshark
else
	echo "capture: neither dumpcap nor tshark is installed (scripts/install-test-deps.sh installs them)" >&2
	exit 1
fi

# The lab is the first argument that names a lab file (*.yaml) or one of
# the labs agentlab embeds (labs/NAME.yaml): its addresses make the filter.
labfile=$here/labs/seed.yaml
for a in "$@"; do
	case $a in
	*.yaml | *.yml)
		labfile=$a
		break
		;;
	--*) ;;
	*)
		if [ -f "$here/labs/$a.yaml" ]; then
			labfile=$here/labs/$a.yaml
			break
		fi
		;;
	esac
done
if [ ! -r "$labfile" ]; then
	echo "capture: lab file $labfile not readable" >&2
	exit 1
fi

# The lab format (labs/seed.yaml): "hosts:" maps names to IPv4 addresses,
# and each Policy Server has a "port:".
addrs=$(awk '
	/^[^ #]/ { inhosts = ($1 == "hosts:") ; next }
	inhosts && $2 ~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/ { print $2 }
' "$labfile" | sort -u)
ports=$(awk '{
	while (match($0, /(^|[ {,-])port: *[0-9]+/)) {
		p = substr($0, RSTART, RLENGTH)
		gsub(/[^0-9]/, "", p)
		print p
		$0 = substr($0, RSTART + RLENGTH)
	}
}' "$labfile" | sort -u)
# A lab that gives no port uses the vendor's authorization port.
[ -n "$ports" ] || ports=44443
if [ -z "$addrs" ]; then
	echo "capture: $labfile: no host addresses under hosts:" >&2
	exit 1
fi
# any "WORD" LIST: "WORD a or WORD b ...", a capture filter alternative.
any() {
	local word=$1 sep="" x
	shift
	for x in "$@"; do
		printf '%s%s %s' "$sep" "$word" "$x"
		sep=" or "
	done
}
# shellcheck disable=SC2086 # the lists are split on purpose
filter="tcp and ($(any port $ports)) and ($(any host $addrs))"

mkdir -p "$out"
pcap=$out/capture.pcapng
# Outside OUTDIR: the run clears its folder's *.log files as it starts.
log=$(mktemp)
rm -f "$pcap"
echo "capture: $capturer on lo, filter: $filter" >&2
"$capturer" -i lo -f "$filter" -w "$pcap" -q >"$log" 2>&1 &
cap=$!
capstatus=0
stop_capture() {
	kill -INT "$cap" 2>/dev/null || true
	wait "$cap" || capstatus=$?
}
trap 'stop_capture; rm -f "$log"' EXIT

# Wait until the capturer says it captures: packets before that are lost.
for _ in $(seq 100); do
	if grep -q "Capturing on" "$log" 2>/dev/null; then
		break
	fi
	if ! kill -0 "$cap" 2>/dev/null; then
		echo "capture: $capturer could not capture (root or dumpcap's capabilities are needed):" >&2
		cat "$log" >&2
		exit 1
	fi
	sleep 0.1
done
if ! grep -q "Capturing on" "$log"; then
	echo "capture: $capturer did not start capturing within 10s:" >&2
	cat "$log" >&2
	exit 1
fi

status=0
"$agentlab" run --out "$out" "$@" || status=$?
# The last FIN/ACKs leave as the processes exit: give the capturer a moment
# to read them from the interface before it stops.
sleep 1
stop_capture
trap 'rm -f "$log"' EXIT
if [ "$capstatus" != 0 ] || [ ! -s "$pcap" ]; then
	echo "capture: $capturer failed (exit $capstatus):" >&2
	cat "$log" >&2
	exit 1
fi
echo "capture: $pcap (captured) beside $out/trace.pcapng (rendered from the trace)" >&2
exit $status
