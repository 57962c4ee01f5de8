#!/usr/bin/env bash
# Builds the named binaries (kube-apiserver, etcd; default both) for the
# Kubernetes tests from the Go module proxy into .tools/kube/bin
# (git-ignored), each from its own module under tools/kube. `make
# kube-tools` calls this only for a binary that is missing or older than its
# module's files. See DEVELOPERS.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/.tools/kube/bin"
go="${GO:-go}"
mkdir -p "$out"
[[ $# -gt 0 ]] || set -- etcd kube-apiserver
for name in "$@"; do
  case "$name" in
    kube-apiserver) mod=apiserver ;;
    etcd) mod=etcd ;;
    *) echo "unknown tool $name" >&2; exit 2 ;;
  esac
  echo "building $name into $out (a cold build of kube-apiserver takes several minutes)" >&2
  # CGO off: static binaries, no C toolchain needed. GOWORK off: the tools
  # modules stand alone.
  ldflags=""
  if [[ $name == kube-apiserver ]]; then
    # What /version reports; a plain `go build` leaves v0.0.0-master.
    v="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$root/tools/kube/$mod/go.mod")"
    minor="${v#v1.}"; minor="${minor%%.*}"
    ldflags="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  fi
  (cd "$root/tools/kube/$mod" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly "$go" build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" .)
  mv "$out/$name.tmp" "$out/$name"
done
