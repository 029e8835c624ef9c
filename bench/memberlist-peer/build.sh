#!/usr/bin/env bash
# Builds memberlist-peer from Debian's packaged Go and memberlist sources (no
# network beyond Debian's archive). Prints the binary's path on success.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/memberlist-peer}"
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/hashicorp/memberlist ]; then
  echo "installing golang-go and golang-github-hashicorp-memberlist-dev from Debian…" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq golang-go golang-github-hashicorp-memberlist-dev >&2
fi
cd "$here"
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="${TMPDIR:-/tmp}/memberlist-peer-gocache" GOFLAGS=-mod=mod \
  go build -o "$out" main.go >&2
echo "$out"
