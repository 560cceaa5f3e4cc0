#!/usr/bin/env bash
# scripts/install.sh into a temporary prefix, then what a user outside the
# repository does with it: bindings/c/example.c built with nothing but
# `pkg-config --cflags --libs evroute`, and a Go program in its own module
# (a `replace` points at this checkout's binding) built with plain `go build`,
# which links through `#cgo pkg-config: evroute`.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

source scripts/need.sh
need_go
need cc:gcc,libc6-dev pkg-config:pkg-config readelf:binutils

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
bash scripts/install.sh "$prefix"

echo "--- installed files and soname"
for f in include/evroute.h lib/libevroute.a lib/libevroute.so lib/libevroute.so.0 lib/pkgconfig/evroute.pc; do
    [ -e "$prefix/$f" ] || { echo "missing $prefix/$f"; exit 1; }
done
soname=$(readelf -d "$prefix/lib/libevroute.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = libevroute.so.0 ] || { echo "soname is '$soname', expected libevroute.so.0"; exit 1; }

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
export LD_LIBRARY_PATH="$prefix/lib"

echo "--- C: example.c with pkg-config --cflags --libs evroute"
cp bindings/c/example.c "$tmp/"
(cd "$tmp" && cc -std=c99 -Wall -Wextra -Werror example.c $(pkg-config --cflags --libs evroute) -o example)
readelf -d "$tmp/example" | grep -q 'NEEDED.*\[libevroute.so.0\]' ||
    { echo "example does not link libevroute.so.0"; exit 1; }
out=$(cat corpus/mastodon/14-update-108914430312582020.json | "$tmp/example" '{}' '{"stream":"hashtag","tag":"test"}')
grep -q '^event: update$' <<<"$out" || { echo "example delivered nothing:"; echo "$out"; exit 1; }

echo "--- Go: a module outside the repository, go build against the installed library"
go_env
export GOFLAGS=-mod=mod  # not go_env's evroute_inrepo tag: this is a user's build
mkdir "$tmp/gouser"
cat >"$tmp/gouser/go.mod" <<MOD
module example.com/gouser

go 1.22

require github.com/evroute/evroute/bindings/go v0.0.0

replace github.com/evroute/evroute/bindings/go => $repo/bindings/go
MOD
cat >"$tmp/gouser/main.go" <<'GO'
package main

import (
	"fmt"
	"os"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
)

func main() {
	eng, err := evroute.NewEngine(evroute.Config{})
	if err != nil {
		panic(err)
	}
	defer eng.Close()
	sub, err := eng.NewSubscriber(evroute.SubscriberOptions{})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	if err := sub.Subscribe(evroute.Subscription{Stream: "public"}); err != nil {
		panic(err)
	}
	if _, err := eng.PublishChannel("timeline:public", []byte(`{"event":"delete","payload":"7"}`)); err != nil {
		panic(err)
	}
	frame, err := sub.Next(time.Second)
	if err != nil || frame == nil {
		fmt.Fprintln(os.Stderr, "no frame:", err)
		os.Exit(1)
	}
	fmt.Print(string(frame.SSE))
}
GO
(cd "$tmp/gouser" && go build -o gouser . && ./gouser >out.txt)
printf 'event: delete\ndata: 7\n\n' | cmp - "$tmp/gouser/out.txt" || { echo "Go program printed:"; cat "$tmp/gouser/out.txt"; exit 1; }
ldd "$tmp/gouser/gouser" | grep -q "libevroute.so.0 => $prefix/lib/" ||
    { echo "the Go program does not use the installed libevroute.so.0"; ldd "$tmp/gouser/gouser"; exit 1; }
echo "install test passed"
