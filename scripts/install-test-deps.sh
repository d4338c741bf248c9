#!/usr/bin/env bash
# Installs the tools some tests use beyond Go, from Debian's packages:
#
#   tshark, dumpcap  read trace.pcapng as Wireshark does; capture a real lab
#                    run to compare with it (tshark, wireshark-common)
#   chromium         renders report.html headless
#   protoc           make proto (protobuf-compiler)
#
# A test whose tool is missing skips with a message naming this script; CI
# runs it first so that none skips there. Does nothing when all are
# installed; uses sudo only when not root.
set -euo pipefail

need=()
command -v tshark >/dev/null || need+=(tshark)
command -v dumpcap >/dev/null || need+=(wireshark-common)
# With --no-install-recommends chromium comes without a font: the report's
# screenshot needs one to draw its labels.
command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -eq 0 ]; then
	echo "install-test-deps: tshark, dumpcap, chromium and protoc are installed"
	exit 0
fi

if ! command -v apt-get >/dev/null; then
	echo "install-test-deps: no apt-get here: install ${need[*]} (Debian's names) by hand" >&2
	exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null; then
		echo "install-test-deps: installing ${need[*]} needs root, and sudo is not installed" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "install-test-deps: installing ${need[*]}"
# wireshark-common asks whether users other than root may capture; the
# answer "no" keeps capturing to root (as CI runs) and the install from
# waiting for a question nobody sees.
echo "wireshark-common wireshark-common/install-setuid boolean false" | "${sudo[@]}" debconf-set-selections
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
