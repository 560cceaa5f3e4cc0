# Sourced by the test parts: install what a part needs on a fresh Debian machine.

# need CMD:PKG[,PKG...] ...  installs the packages of every command that is missing.
# Fails when apt-get does; callers that can skip instead add `|| echo ...`.
need() {
    local missing=() spec pkgs
    for spec in "$@"; do
        if ! command -v "${spec%%:*}" >/dev/null 2>&1; then
            IFS=, read -r -a pkgs <<<"${spec#*:}"
            missing+=("${pkgs[@]}")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo_=""
    [ "$(id -u)" = 0 ] || sudo_=sudo
    echo "installing ${missing[*]}"
    $sudo_ apt-get update -qq || true
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# need_apt PKG...: installs the packages unconditionally.
need_apt() {
    local sudo_=""
    [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq || true
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# need_pytest installs pytest with pip when it is missing.
need_pytest() {
    python3 -c 'import pytest' 2>/dev/null && return 0
    # Debian's system Python refuses plain pip installs (PEP 668).
    python3 -m pip install --quiet pytest 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages pytest
}

# python_venv DIR: a fresh virtual environment in DIR with pytest, mypy and the
# evroute package built as a wheel from bindings/python (cargo builds the
# library, cffi the extension), so tests see what `pip install` gives a user.
# Sets $py to its python.
python_venv() {
    need python3:python3 cc:gcc,libc6-dev
    python3 -c 'import ensurepip, sysconfig, os; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
        2>/dev/null || need_apt python3-venv python3-dev
    rm -rf "$1"
    python3 -m venv "$1"
    py="$1/bin/python"
    "$py" -m pip install --quiet --disable-pip-version-check pytest mypy
    "$py" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$1/wheel" ./bindings/python
    "$py" -m pip install --quiet --disable-pip-version-check "$1"/wheel/evroute-*.whl
    python_source_stamp >"$1/source-stamp"
}

# python_source_stamp: a hash of what the Python package is built from (the
# engine and the binding, committed or not), so that a part reusing a venv can
# tell whether it still holds this checkout's package. Empty outside git.
python_source_stamp() {
    git rev-parse --git-dir >/dev/null 2>&1 || return 0
    local paths=(src include build.rs Cargo.toml Cargo.lock bindings/python)
    {
        git ls-files -s -- "${paths[@]}"
        git diff HEAD -- "${paths[@]}"
        git ls-files -o --exclude-standard -z -- "${paths[@]}" | xargs -0 -r sha256sum
    } | sha256sum | cut -d' ' -f1
}

# need_go: a Go toolchain of at least the go.mod version. Debian's golang-go (1.19 on
# bookworm) is older, so then the toolchain is taken from the Go module proxy
# (golang.org/toolchain, what GOTOOLCHAIN switching downloads) into target/.
go_min=1.22.12
need_go() {
    need go:golang-go
    local have
    have=$(go env GOVERSION | sed 's/^go//')
    [ "$(printf '%s\n' "$go_min" "$have" | sort -V | head -n1)" = "$go_min" ] && return 0
    local dir="$PWD/target/go$go_min" mod tmp
    if [ ! -x "$dir/bin/go" ]; then
        echo "Go $have is older than $go_min: fetching go$go_min from the Go module proxy"
        mod="golang.org/toolchain@v0.0.1-go$go_min.$(go env GOOS)-$(go env GOARCH)"
        tmp=$(mktemp -d)
        GOMODCACHE="$tmp" GOPROXY=https://proxy.golang.org GOFLAGS=-mod=mod go mod download "$mod"
        rm -rf "$dir" && mkdir -p "$dir"
        cp -r "$tmp/$mod/." "$dir"
        # Module zips keep no permissions; the module cache is read-only.
        chmod -R u+w "$dir" "$tmp" && rm -rf "$tmp"
        chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/*
    fi
    export PATH="$dir/bin:$PATH"
}

# go_env: the Go module (bindings/go) takes its modules, pinned by the committed go.sum,
# from the Go module proxy; the tag evroute_inrepo links this checkout's
# target/release/libevroute.a (bindings/go/link_inrepo.go) instead of the installed
# library; keep Go's caches writable (a scratch dir, removed on exit, when the
# defaults are not).
go_env() {
    export GOFLAGS="-mod=readonly -tags=evroute_inrepo" GOPROXY=https://proxy.golang.org,direct GOTOOLCHAIN=local CGO_ENABLED=1
    # Go's build cache does not notice a rebuilt target/release/libevroute.a
    # (linked through cgo LDFLAGS), so binaries and tests would keep the old
    # library: a link flag that changes with it makes Go link again. Call
    # go_env after building the library.
    if [ -f target/release/libevroute.a ]; then
        GOFLAGS="$GOFLAGS -ldflags=-X=main.evrouteLib=$(cksum <target/release/libevroute.a | cut -d' ' -f1)"
    fi
    go_scratch=$(mktemp -d)
    trap 'rm -rf "$go_scratch"' EXIT
    mkdir -p "$(go env GOPATH)" 2>/dev/null && [ -w "$(go env GOPATH)" ] || export GOPATH="$go_scratch/gopath"
    mkdir -p "$(go env GOCACHE)" 2>/dev/null && [ -w "$(go env GOCACHE)" ] || export GOCACHE="$go_scratch/gocache"
}

# mastodon_pg DIR NUSERS: a throw-away Postgres cluster in DIR/pg (owned by the
# postgres user when we are root: Postgres refuses to run as root) on a free
# loopback port, with database `mastodon` loaded from tests/mastodon-db (NUSERS
# seeded users). Installs Debian's postgresql when missing. Sets $pgport and
# $pgbin; mastodon_pg_stop DIR stops it.
# free_port: prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

mastodon_pg() {
    local dir=$1 nusers=$2 initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$initdb" ]; then
        need pg_ctlcluster:postgresql
        initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)
    fi
    pgbin=$(dirname "$initdb")
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    pgport=$(free_port)
    as_pg "$pgbin/initdb" -D "$dir/pg" -A trust -U postgres >/dev/null
    as_pg "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
        -o "-p $pgport -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    local psql=(psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres)
    "${psql[@]}" -c "CREATE DATABASE mastodon"
    "${psql[@]}" -d mastodon -c "SET client_min_messages = warning" -f tests/mastodon-db/schema.sql
    "${psql[@]}" -d mastodon -v nusers="$nusers" -f tests/mastodon-db/seed.sql
}

mastodon_pg_stop() {
    [ -f "$1/pg/postmaster.pid" ] && as_pg "$pgbin/pg_ctl" -D "$1/pg" -m immediate stop >/dev/null 2>&1 || true
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
