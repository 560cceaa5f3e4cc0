//go:build evroute_inrepo

package evroute

// The build tag evroute_inrepo links the static library of this checkout,
// target/release/libevroute.a (what the repository's tests use), and the
// header in include/. The #error names the step that is missing when that
// library has not been built, instead of a bare linker error.

/*
#cgo CFLAGS: -I${SRCDIR}/../../include -I${SRCDIR}/../../target/release -DEVR_FEATURE_REDIS
#cgo LDFLAGS: ${SRCDIR}/../../target/release/libevroute.a -lpthread -ldl -lm
#if defined(__has_include)
#if !__has_include("libevroute.a")
#error "evroute: target/release/libevroute.a is missing: run `cargo build --release --lib` at the repository root"
#endif
#endif
*/
import "C"
