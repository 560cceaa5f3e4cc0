//go:build !evroute_redis

package evroute

// The default build links the library without the redis feature. With the
// build tag evroute_redis, redis.go links the redis-enabled one instead:
// exactly one static library is linked either way.

// #cgo LDFLAGS: ${SRCDIR}/../../target/release/libevroute.a -lpthread -ldl -lm
import "C"
