#!/usr/bin/env bash
# Go bindings (bindings/go, cgo linking target/release/libevroute.a through the
# build tag evroute_inrepo that go_env sets): go vet, go test, go test -race, and
# one pass with GODEBUG=cgocheck=1 GOGC=1. The Redis tests run in 66-redis-bindings.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
need_go
need cc:gcc,libc6-dev
go version

cargo build --release --lib --all-features
go_env
cd bindings/go

echo "--- go vet"
go vet ./...
echo "--- go test"
go test -count=1 -skip Redis ./...
echo "--- go test -race"
# -short skips the 200k-cycle leak test, which the plain pass already ran.
if race_err=$(go build -race -o /dev/null . 2>&1); then
    go test -count=1 -short -skip Redis -race ./...
else
    echo "SKIPPED -race: this Go toolchain cannot build with the race detector:"
    echo "$race_err" | head -5
fi
echo "--- GODEBUG=cgocheck=1 GOGC=1 go test"
GODEBUG=cgocheck=1 GOGC=1 go test -count=1 -short -skip Redis ./...
echo "Go binding tests passed"
