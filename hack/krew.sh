#!/usr/bin/env bash
# Packages kubectl-tenantry for krew (GNU tar and sha256sum): one archive per platform and the krew manifest naming them, in
# dist/krew/ (make build-installer runs it). The archives are reproducible (-trimpath, fixed times and
# owners), so the manifest's checksums are those of the archives a release publishes at PLUGIN_URL.
#
#   PLUGIN_VERSION    the plugin's version (default: git describe, else v0.0.0-dev)
#   PLUGIN_URL        where the release's archives are downloaded from
#   PLUGIN_PLATFORMS  os/arch pairs to build (default: linux and darwin on amd64 and arm64, windows/amd64)
#   KREW_OUT          the directory to write (default: dist/krew)
#
# Install from the files written, without publishing them:
#   kubectl krew install --manifest=dist/krew/tenantry.yaml --archive=dist/krew/kubectl-tenantry_linux_amd64.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022 # the archives' file modes, whoever runs it

version=${PLUGIN_VERSION:-$(git describe --tags --match 'v[0-9]*' 2>/dev/null || echo v0.0.0-dev)}
base=${PLUGIN_URL:-https://github.com/tenantry/tenantry/releases/download/$version}
platforms=${PLUGIN_PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64}
out=${KREW_OUT:-dist/krew}

mkdir -p "$out"
rm -f "$out"/kubectl-tenantry_*.tar.gz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

manifest="$out/tenantry.yaml"
cat > "$manifest.tmp" <<YAML
# The krew manifest of kubectl tenantry, written by hack/krew.sh (make build-installer).
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: tenantry
spec:
  version: "$version"
  homepage: https://tenantry.dev
  shortDescription: Inspect and operate a Tenantry fleet of tenants
  description: |
    kubectl tenantry shows a Tenantry fleet per ExpenseApp (versions, rollout, shards, tenants not
    Ready, drifted or largest), one tenant in full, schema drift and migrations; it suspends, resumes,
    moves a tenant or resets its first admin by editing its resources, and opens psql in a tenant's
    schema as the app's login. It reads the Kubernetes API only.
  caveats: |
    Shell completion: link kubectl_complete-tenantry, which this plugin's directory in krew's store
    holds, onto your PATH. The psql command needs the PostgreSQL client (psql) on the PATH.
  platforms:
YAML

for platform in $platforms; do
  os=${platform%/*}
  arch=${platform#*/}
  ext=""
  [ "$os" = windows ] && ext=.exe
  dir="$work/$os-$arch"
  mkdir -p "$dir"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath \
    -ldflags="-s -w -X tenantry.dev/tenantry/internal/plugin.Version=$version" \
    -o "$dir/kubectl-tenantry$ext" ./cmd/kubectl-tenantry
  files=("kubectl-tenantry$ext" kubectl-plugin.md)
  cp docs/kubectl-plugin.md "$dir/"
  if [ "$os" != windows ]; then
    cp cmd/kubectl-tenantry/kubectl_complete-tenantry "$dir/"
    files+=(kubectl_complete-tenantry)
  fi
  archive="kubectl-tenantry_${os}_${arch}.tar.gz"
  tar -C "$dir" --sort=name --mtime='2000-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner --mode=go-w,a+rX \
    -cf - "${files[@]}" | gzip -n > "$out/$archive"
  sum=$(sha256sum "$out/$archive" | cut -d' ' -f1)
  {
    echo "  - selector:"
    echo "      matchLabels:"
    echo "        os: $os"
    echo "        arch: $arch"
    echo "    uri: \"$base/$archive\""
    echo "    sha256: $sum"
    echo "    files:"
    for f in "${files[@]}"; do
      echo "    - from: $f"
      echo "      to: ."
    done
    echo "    bin: kubectl-tenantry$ext"
  } >> "$manifest.tmp"
done
mv "$manifest.tmp" "$manifest"
echo "$manifest: kubectl-tenantry $version for $platforms"
