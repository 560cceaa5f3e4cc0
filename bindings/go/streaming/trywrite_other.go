//go:build !linux

package streaming

import (
	"errors"
	"syscall"
)

// rawConn: writes that never wait are Linux-only; elsewhere every batch
// takes a connection's slow path.
func rawConn(*wire) syscall.RawConn { return nil }

func tryWritev(syscall.RawConn, *outBatch) error { return errors.ErrUnsupported }
