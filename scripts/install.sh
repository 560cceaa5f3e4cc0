#!/usr/bin/env bash
# Installs the C library of evroute: include/evroute.h, libevroute.a, the shared
# library with its ABI soname (libevroute.so.0 on Linux, libevroute.0.dylib on
# macOS) and evroute.pc for pkg-config. The library is built with the default
# features, so it carries the Redis node.
#
#   scripts/install.sh [PREFIX]        PREFIX defaults to /usr/local
#   DESTDIR=/tmp/stage scripts/install.sh /usr     stages for packaging
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${1:-/usr/local}
case "$prefix" in /*) ;; *) echo "install.sh: PREFIX must be an absolute path, not $prefix" >&2; exit 2 ;; esac
target=${CARGO_TARGET_DIR:-target}/release
cargo build --release --lib

version=$(sed -n 's/^#define EVR_VERSION "\(.*\)"$/\1/p' include/evroute.h)
major=${version%%.*}
dest=${DESTDIR:-}
libdir=$dest$prefix/lib
install -d "$dest$prefix/include" "$libdir/pkgconfig"
install -m 644 include/evroute.h "$dest$prefix/include/"
install -m 644 "$target/libevroute.a" "$libdir/"
if [ "$(uname -s)" = Darwin ]; then
    install -m 755 "$target/libevroute.dylib" "$libdir/libevroute.$version.dylib"
    ln -sf "libevroute.$version.dylib" "$libdir/libevroute.$major.dylib"
    ln -sf "libevroute.$major.dylib" "$libdir/libevroute.dylib"
else
    install -m 755 "$target/libevroute.so" "$libdir/libevroute.so.$version"
    ln -sf "libevroute.so.$version" "$libdir/libevroute.so.$major"
    ln -sf "libevroute.so.$major" "$libdir/libevroute.so"
fi
# EVR_FEATURE_REDIS: the header declares the evr_redis_* functions only with it.
cat >"$libdir/pkgconfig/evroute.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: evroute
Description: Event-routing engine for Mastodon-style streaming servers (C ABI)
URL: https://github.com/evroute/evroute
Version: $version
Cflags: -I\${includedir} -DEVR_FEATURE_REDIS
Libs: -L\${libdir} -levroute
Libs.private: -lpthread -ldl -lm
PC
echo "installed evroute $version into $dest$prefix"
