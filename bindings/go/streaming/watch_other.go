//go:build !linux

package streaming

import (
	"errors"
	"net"
)

// watchSet is epoll-based on Linux; elsewhere every SSE stream reads its
// own socket to notice its client going away.
type watchSet struct{}

var watches watchSet

type controller interface {
	Control(f func(fd uintptr)) error
}

func (watchSet) add(controller, uint32, bool, func()) uint64 { return 0 }

func (watchSet) arm(controller, uint64, uint32) error { return errors.ErrUnsupported }

func (watchSet) remove(controller, uint64) {}

func watchClose(net.Conn, func()) func() { return nil }

// readWatch is epoll-based on Linux; elsewhere a WebSocket's reader keeps
// its goroutine.
type readWatch struct{}

func watchReads(net.Conn, func()) *readWatch { return nil }

func (*readWatch) arm() error { return errors.ErrUnsupported }

func (*readWatch) remove() {}
