#!/usr/bin/env bash
# Generates the Go types of contracts/puntos.wsdl with gowsdl (pinned in go.mod)
# into DIR/puntos.go (default: gateway/soap/gen). `make soap-gen` runs it; the
# package's tests run it into a temporary directory to catch a stale gen/.
#
# gowsdl tags every field omitempty, which would drop a balance of 0 from an
# answer; the tags lose it here. Optional elements are pointers or slices in the
# generated code (the XSD marks them nillable), so they are still left out when
# unset.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/gateway/soap/gen}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$root" && go build -o "$tmp/gowsdl" github.com/hooklift/gowsdl/cmd/gowsdl)
mkdir -p "$tmp/out"
if ! (cd "$tmp" && ./gowsdl -p gen -o puntos.go -d "$tmp/out" "$root/contracts/puntos.wsdl" \
	>"$tmp/log" 2>&1); then
	cat "$tmp/log" >&2
	exit 1
fi
mkdir -p "$out"
sed -e 's/,omitempty//g' "$tmp/out/gen/puntos.go" | gofmt >"$out/puntos.go"
