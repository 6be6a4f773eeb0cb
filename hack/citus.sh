#!/usr/bin/env bash
# Builds Citus from source (no Debian registry serves it for PostgreSQL 15) and installs it into the
# machine's PostgreSQL, caching the build under ~/.cache/tenantry so that a second checkout, or a second
# run, only copies files. Prints the directory of the installed extension's files.
#
# The source is $CITUS_TARBALL when set (a machine with no internet: .ci/run points it at a copy);
# otherwise Citus's own release tarball is downloaded once into the cache. Either must match the pinned
# checksum.
#
# Needs root (it writes into PostgreSQL's lib and share directories) and Debian's build dependencies:
#   apt-get install postgresql-server-dev-15 libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev \
#     libssl-dev libicu-dev flex bison
# Fails, with a message saying what is missing, when it cannot build or install.
set -euo pipefail

version=13.2.2
sha256=c8fc76dc8294636a52b1a0dd75a20d8b4a36937df6443e30ca84d8d0464a6bb9
url="https://github.com/citusdata/citus/archive/refs/tags/v$version.tar.gz"

pg_config="${PG_CONFIG:-$(ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1)}"
if [ -z "$pg_config" ] || [ ! -x "$pg_config" ]; then
  echo "hack/citus.sh: no pg_config; install postgresql-server-dev-15" >&2
  exit 1
fi
pg_version="$("$pg_config" --version | awk '{print $2}')"   # e.g. 15.20: the headers' minor matters
libdir="$("$pg_config" --pkglibdir)"
extdir="$("$pg_config" --sharedir)/extension"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tenantry/citus-$version-pg$pg_version"

installed() {
  [ -f "$libdir/citus.so" ] && [ -f "$extdir/citus.control" ] &&
    grep -q "default_version = '${version%.*}" "$extdir/citus.control"
}

if installed; then
  echo "$extdir"
  exit 0
fi
if [ ! -w "$libdir" ] || [ ! -w "$extdir" ]; then
  echo "hack/citus.sh: Citus $version is not installed into $libdir, and installing it needs root: run \`sudo make citus\` once" >&2
  exit 1
fi

if [ ! -d "$cache/stage" ]; then
  tarball="${CITUS_TARBALL:-}"
  if [ -z "$tarball" ]; then
    tarball="$(dirname "$cache")/citus-$version.tar.gz"
    if [ ! -f "$tarball" ]; then
      mkdir -p "$(dirname "$tarball")"
      echo "hack/citus.sh: downloading $url" >&2
      curl -fsSL --retry 3 -o "$tarball.part" "$url" ||
        { rm -f "$tarball.part"; echo "hack/citus.sh: cannot download $url: set CITUS_TARBALL to a copy of it" >&2; exit 1; }
      mv "$tarball.part" "$tarball"
    fi
  elif [ ! -f "$tarball" ]; then
    echo "hack/citus.sh: CITUS_TARBALL=$tarball not found" >&2
    exit 1
  fi
  echo "$sha256  $tarball" | sha256sum -c --quiet - || { echo "hack/citus.sh: $tarball: checksum mismatch" >&2; exit 1; }
  src="$(mktemp -d)"
  trap 'rm -rf "$src"' EXIT
  tar xzf "$tarball" -C "$src"
  cd "$src/citus-$version"
  # PostgreSQL 15.20's commands/dbcommands.h exports have_createdb_privilege(), which Citus's PG15
  # compatibility header also defines as a static function: give Citus's copy a name of its own.
  sed -i '/^static inline bool$/{N;s/^static inline bool\nhave_createdb_privilege(void)$/#define have_createdb_privilege citus_have_createdb_privilege\nstatic inline bool\nhave_createdb_privilege(void)/}' \
    src/include/pg_version_compat.h
  grep -q citus_have_createdb_privilege src/include/pg_version_compat.h ||
    { echo "hack/citus.sh: the header fix no longer applies to this Citus source" >&2; exit 1; }
  echo "hack/citus.sh: building Citus $version for PostgreSQL $pg_version (about 2 minutes)" >&2
  ./configure --quiet --without-libcurl PG_CONFIG="$pg_config" >&2
  make -s -j"$(nproc)" >&2
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  make -s install DESTDIR="$cache.tmp/stage" >&2
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi

# The staged tree mirrors the file system: copy it over.
cp -a "$cache/stage/." /
installed || { echo "hack/citus.sh: Citus did not install into $libdir and $extdir" >&2; exit 1; }
echo "$extdir"
