//go:build !linux

package streaming

import "net"

// closeWatch is epoll-based on Linux; elsewhere every stream reads its own
// socket to notice its client going away.
type closeWatch struct{}

var closes closeWatch

func (closeWatch) watch(net.Conn, func()) func() { return nil }
