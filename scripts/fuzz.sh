#!/bin/sh
# fuzz.sh FUZZTIME PKG:FuzzName... runs each fuzz target for FUZZTIME
# (go test -fuzz takes one target of one package at a time).
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context
# deadline exceeded" right at the -fuzztime boundary, on a loaded machine,
# having found nothing and written no failing input (golang/go#75804, fixed
# in Go 1.27). That one outcome is tried once more; any other failure, or a
# written failing input, fails at once.
set -u
go=${GO:-go}
fuzztime=$1
shift
for t in "$@"; do
	pkg=${t%%:*}
	fn=${t##*:}
	try=1
	while :; do
		echo "fuzz $pkg $fn for $fuzztime"
		out=$($go test -run='^$' -fuzz="^$fn\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s "$pkg" 2>&1)
		rc=$?
		printf '%s\n' "$out"
		[ "$rc" -eq 0 ] && break
		if [ "$try" -eq 1 ] && printf '%s' "$out" | grep -q 'context deadline exceeded' &&
			! printf '%s' "$out" | grep -q 'Failing input written'; then
			echo "fuzz $pkg $fn: Go's fuzz coordinator hit its own deadline (golang/go#75804) and found nothing: once more"
			try=2
			continue
		fi
		exit "$rc"
	done
done
