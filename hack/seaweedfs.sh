#!/usr/bin/env bash
# Prints the path of a SeaweedFS `weed` binary, building it first: the S3-compatible object store the
# backup tests and benchmarks start (SeaweedFS is Apache-2.0; MinIO's server is AGPL and not used).
#
# SeaweedFS publishes no module tags, so it is pinned by pseudo-version. Its go.mod has a replace
# directive, which `go install module@version` refuses: it is built from a helper module that repeats it.
# The binary is cached under bin/ and machine-wide under ~/.cache/tenantry, so every clone skips the build.
set -euo pipefail

SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name="weed-${SEAWEEDFS_VERSION##*-}-$(go env GOOS)-$(go env GOARCH)"
bin="$root/bin/$name"
shared="${XDG_CACHE_HOME:-$HOME/.cache}/tenantry/$name"

log() { echo "seaweedfs: $*" >&2; }

if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi
mkdir -p "$root/bin"
if [[ -x "$shared" ]]; then cp "$shared" "$bin"; echo "$bin"; exit 0; fi

log "building weed ${SEAWEEDFS_VERSION} from the Go module proxy (a few minutes)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
smod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/seaweedfs/seaweedfs@${SEAWEEDFS_VERSION}" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
{
  echo "module tenantry.dev/seaweedfs-build"
  echo
  echo "go $(sed -n 's/^go //p' "$smod")"
  echo
  echo "require github.com/seaweedfs/seaweedfs ${SEAWEEDFS_VERSION}"
  echo
  # SeaweedFS's own replace directives that point at another module (not at a local path).
  sed -n 's#^replace \([^ ]*\) => \([^ .][^ ]*\) \(v[^ ]*\)$#replace \1 => \2 \3#p' "$smod"
} >"$work/go.mod"
(
  cd "$work"
  GOFLAGS=-mod=mod go get "github.com/seaweedfs/seaweedfs/weed@${SEAWEEDFS_VERSION}" >&2
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/seaweedfs/seaweedfs/weed >&2
)
mv "$bin.tmp" "$bin"
mkdir -p "$(dirname "$shared")" && cp "$bin" "$shared" || true
echo "$bin"
