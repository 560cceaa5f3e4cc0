package streaming

import (
	"net"
	"syscall"
	"unsafe"
)

// rawConn is the socket of a hijacked wire, for writes that never wait;
// nil when there is none (HTTP/2, TLS).
func rawConn(w *wire) syscall.RawConn {
	sc, ok := w.Conn.(syscall.Conn)
	if w.Conn == nil || !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// tryWritev writes o.iov in one writev without waiting; the caller holds
// the wire's lock. o.iov is left empty when everything went out, or holds
// what is left when the socket would block.
func tryWritev(raw syscall.RawConn, o *outBatch) error {
	o.vecs = o.vecs[:0]
	for _, b := range o.iov {
		if len(b) > 0 {
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			o.vecs = append(o.vecs, v)
		}
	}
	if o.rawWrite == nil {
		o.rawWrite = o.writevRaw // made once: a closure per write would allocate
	}
	// Control, not Write: the write never waits, so it needs none of the
	// poller's bookkeeping for a wait (the wire's lock serializes writers).
	if err := raw.Control(o.rawWrite); err != nil {
		return err
	}
	n := o.wrote
	switch {
	case o.errno == syscall.EAGAIN:
		n = 0
	case o.errno != 0:
		return o.errno
	}
	consume(&o.iov, n)
	return nil
}

// writevRaw is one writev of o.vecs on fd; it never waits (the slow
// path does, through the poller).
func (o *outBatch) writevRaw(fd uintptr) {
	for {
		n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&o.vecs[0])), uintptr(len(o.vecs)))
		if errno != syscall.EINTR {
			o.wrote, o.errno = int(n), errno
			return
		}
	}
}

// consume drops the first n bytes of bufs; an empty result keeps the
// array, for the next batch.
func consume(bufs *net.Buffers, n int) {
	all := *bufs
	for len(*bufs) > 0 && n >= len((*bufs)[0]) {
		n -= len((*bufs)[0])
		*bufs = (*bufs)[1:]
	}
	if len(*bufs) == 0 {
		*bufs = all[:0]
		return
	}
	(*bufs)[0] = (*bufs)[0][n:]
}
