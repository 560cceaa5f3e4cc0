//go:build !evroute_inrepo

package evroute

// By default the binding links the installed library through pkg-config
// (evroute.pc, written by scripts/install.sh). If `go build` stops at
// "Package evroute was not found in the pkg-config search path", install the
// library (README, "Installing") or set PKG_CONFIG_PATH to the directory that
// holds evroute.pc. Inside the repository, build with -tags evroute_inrepo
// to link target/release/libevroute.a instead (link_inrepo.go).

// #cgo pkg-config: evroute
import "C"
