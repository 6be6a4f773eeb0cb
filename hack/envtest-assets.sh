#!/usr/bin/env bash
# Prints the absolute directory that holds envtest's `etcd` and `kube-apiserver`, getting them first.
#
# Where the network allows, setup-envtest downloads the released binaries. Where it does not (only the
# Go module proxy is reachable), both are built from source through the module proxy:
#   kube-apiserver from k8s.io/kubernetes, in a helper module that replaces every staging module with
#   its published tag (k8s.io/kubernetes' own go.mod points them at ./staging, which a module download
#   does not have), and etcd from go.etcd.io/etcd/server/v3.
# Versions are pinned here; binaries are cached under bin/k8s/<version>-<os>-<arch>/.
# Progress goes to stderr, the directory alone to stdout, so `make -s envtest-assets` is scriptable.
set -euo pipefail

K8S_VERSION=${ENVTEST_K8S_VERSION:-1.37.2}
ETCD_VERSION=${ENVTEST_ETCD_VERSION:-3.6.16}
SETUP_ENVTEST_VERSION=${SETUP_ENVTEST_VERSION:-release-0.23}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
goos=$(go env GOOS)
goarch=$(go env GOARCH)
dir="$root/bin/k8s/${K8S_VERSION}-${goos}-${goarch}"

log() { echo "envtest-assets: $*" >&2; }

have_assets() {
  [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" ]] &&
    "$dir/kube-apiserver" --version 2>/dev/null | grep -qF "v${K8S_VERSION}"
}

# A machine-wide copy outside the checkout lets every clone on this machine (CI's among them) skip the build.
shared="${XDG_CACHE_HOME:-$HOME/.cache}/tenantry/k8s/${K8S_VERSION}-${goos}-${goarch}"

if have_assets; then
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
if [[ -x "$shared/kube-apiserver" && -x "$shared/etcd" ]]; then
  cp "$shared/kube-apiserver" "$shared/etcd" "$dir/"
  if have_assets; then echo "$dir"; exit 0; fi
fi

# 1. The released binaries, where the network allows. Skipped quickly when it does not.
if [[ "${ENVTEST_DOWNLOAD:-auto}" != "never" ]]; then
  log "trying setup-envtest for ${K8S_VERSION}"
  if downloaded=$(timeout 120 go run "sigs.k8s.io/controller-runtime/tools/setup-envtest@${SETUP_ENVTEST_VERSION}" \
      use "${K8S_VERSION}" --bin-dir "$root/bin/setup-envtest" -p path 2>/dev/null) && [[ -x "$downloaded/kube-apiserver" ]]; then
    cp "$downloaded/kube-apiserver" "$downloaded/etcd" "$dir/"
    if have_assets; then echo "$dir"; exit 0; fi
  fi
  log "download not possible here; building from the Go module proxy"
fi

# 2. Built from the Go module proxy.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ! -x "$dir/kube-apiserver" ]] || ! "$dir/kube-apiserver" --version 2>/dev/null | grep -qF "v${K8S_VERSION}"; then
  log "building kube-apiserver v${K8S_VERSION} (takes about 4 minutes)"
  kmod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  mkdir -p "$work/apiserver"
  {
    echo "module tenantry.dev/envtest-build"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
    echo
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    echo
    # Every staging module k8s.io/kubernetes replaces with ./staging/src/... goes to its published tag.
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#replace \1 => \1 v0.'"${K8S_VERSION#1.}"'#p' "$kmod"
  } >"$work/apiserver/go.mod"
  minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X '$pkg.gitVersion=v${K8S_VERSION}' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=${minor}'"
    ldflags+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=1970-01-01T00:00:00Z'"
  done
  (
    cd "$work/apiserver"
    GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@v${K8S_VERSION}" >&2
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$dir/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
  )
fi

if [[ ! -x "$dir/etcd" ]]; then
  # etcd's server module has replace directives of its own, so `go install module@version` refuses it:
  # build it from a helper module too, which takes the published versions of its sibling modules.
  log "building etcd v${ETCD_VERSION}"
  mkdir -p "$work/etcd"
  printf 'module tenantry.dev/etcd-build\n\ngo 1.26\n' >"$work/etcd/go.mod"
  (
    cd "$work/etcd"
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$dir/etcd" go.etcd.io/etcd/server/v3 >&2
  )
fi

have_assets || { log "kube-apiserver in $dir does not report v${K8S_VERSION}"; exit 1; }
mkdir -p "$shared" && cp "$dir/kube-apiserver" "$dir/etcd" "$shared/" || true
echo "$dir"
