package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// readStreams reads the clients' streams with g.readers goroutines, each with
// an epoll set of its share of the sockets, rather than one goroutine per
// client: on a machine shared with the server under test, a wakeup, a read
// and a failed read per client and frame would take CPU from the server
// and delay the reads. An epoll set is itself in Go's poller, so a reader
// with nothing to read parks without holding a thread or a P (a goroutine
// blocked in epoll_wait would keep its P until sysmon takes it back, which
// delayed the publisher's timer by up to 10 ms). Each read is one recvmsg
// that also gets the kernel's receive time of the last segment it read
// (SO_TIMESTAMPNS): when the bytes reached this host, whatever the reader's
// scheduling.
func (g *loadgen) readStreams(ctx context.Context, conns []*streamConn) (err error) {
	n := max(1, min(g.readers, len(conns)))
	readers := make([]*epollReader, 0, n)
	defer func() {
		if err != nil { // what was set up so far
			for _, rd := range readers {
				rd.close()
			}
		}
	}()
	for range n {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return fmt.Errorf("epoll_create1: %w", err)
		}
		if err := syscall.SetNonblock(epfd, true); err != nil {
			syscall.Close(epfd)
			return fmt.Errorf("epoll fd: %w", err)
		}
		// Non-blocking, so os.NewFile puts it in Go's poller.
		f := os.NewFile(uintptr(epfd), "loadgen-epoll")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return fmt.Errorf("epoll fd: %w", err)
		}
		readers = append(readers, &epollReader{epfd: epfd, file: f, raw: rc, rec: recorder{g: g}})
	}
	for i, c := range conns {
		rd := readers[i%n]
		fd, err := takeFd(c)
		if err != nil {
			return err
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(len(rd.conns))}
		if ws, ok := c.p.(*wsParser); ok {
			ws.reply = func(b []byte) error { return writeAll(fd, b) }
		}
		if err := c.p.feed(c.pending, &rd.rec); err != nil {
			syscall.Close(fd)
			return err
		}
		rd.conns = append(rd.conns, epollConn{fd: fd, p: c.p})
		if err := syscall.EpollCtl(rd.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	for _, rd := range readers {
		g.clientWG.Add(1)
		go func() {
			defer g.clientWG.Done()
			rd.run(ctx)
		}()
	}
	return nil
}

// takeFd moves the client's socket out of Go's poller: a duplicate with
// receive timestamps on (it shares the original's O_NONBLOCK), then the
// original is closed.
func takeFd(c *streamConn) (int, error) {
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("not a socket: %T", c.conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) {
		syscall.ForkLock.RLock()
		fd, err = syscall.Dup(int(s))
		if err == nil {
			syscall.CloseOnExec(fd)
		}
		syscall.ForkLock.RUnlock()
	}); cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	c.conn.Close()
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	return fd, nil
}

type epollConn struct {
	fd int // -1 once closed
	p  parser
}

type epollReader struct {
	epfd  int
	file  *os.File // epfd in Go's poller
	raw   syscall.RawConn
	conns []epollConn // by the index in their epoll event
	rec   recorder
}

func (rd *epollReader) run(ctx context.Context) {
	defer rd.rec.g.keep(&rd.rec.l)
	defer rd.close()
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 256<<10)
	oob := make([]uint64, 16) // aligned for the control messages
	iov := syscall.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	msg := syscall.Msghdr{Iov: &iov, Iovlen: 1, Control: (*byte)(unsafe.Pointer(&oob[0]))}
	context.AfterFunc(ctx, func() { _ = rd.file.SetReadDeadline(time.Unix(1, 0)) })
	for ctx.Err() == nil {
		n := 0
		err := rd.raw.Read(func(fd uintptr) bool {
			var err error
			n, err = syscall.EpollWait(int(fd), events, 0)
			return n > 0 || (err != nil && err != syscall.EINTR)
		})
		if err != nil {
			return // ctx is done
		}
		for _, ev := range events[:max(n, 0)] {
			i := int(ev.Fd)
			c := &rd.conns[i]
			msg.SetControllen(len(oob) * 8)
			msg.Flags = 0
			// Level-triggered: a read that leaves bytes behind is reported
			// again by the next epoll_wait.
			r, _, errno := syscall.RawSyscall(syscall.SYS_RECVMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&msg)), 0)
			now := time.Now().UnixNano()
			if errno == syscall.EAGAIN || errno == syscall.EINTR {
				continue
			}
			if errno != 0 || r == 0 {
				rd.drop(i) // the server closed the stream
				continue
			}
			rd.rec.read = now
			rd.rec.arrived = rxTime(unsafe.Slice((*byte)(unsafe.Pointer(&oob[0])), msg.Controllen), now, rd.rec.g)
			if err := c.p.feed(buf[:r], &rd.rec); err != nil {
				rd.drop(i)
			}
		}
	}
}

// close closes the reader's sockets and its epoll set.
func (rd *epollReader) close() {
	for i := range rd.conns {
		rd.drop(i)
	}
	rd.file.Close()
}

func (rd *epollReader) drop(i int) {
	if c := &rd.conns[i]; c.fd >= 0 {
		_ = syscall.EpollCtl(rd.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
		syscall.Close(c.fd)
		c.fd = -1
	}
}

// rxTime is the SCM_TIMESTAMPNS of a recvmsg's control messages (UnixNano),
// or def, counted in g.unstamped, when there is none.
func rxTime(oob []byte, def int64, g *loadgen) int64 {
	for len(oob) >= syscall.SizeofCmsghdr {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < syscall.SizeofCmsghdr || l > len(oob) {
			break
		}
		if h.Level == syscall.SOL_SOCKET && h.Type == syscall.SCM_TIMESTAMPNS && l >= syscall.CmsgLen(int(unsafe.Sizeof(syscall.Timespec{}))) {
			return (*syscall.Timespec)(unsafe.Pointer(&oob[syscall.CmsgLen(0)])).Nano()
		}
		next := syscall.CmsgSpace(l - syscall.CmsgLen(0))
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	g.unstamped.Add(1)
	return def
}

// writeAll writes a client's few bytes (a pong) to its non-blocking socket;
// one the socket has no room for ends the client.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// pacingThread readies the calling goroutine for pacing: an OS thread of
// its own, woken by its timer with 1 µs of slack instead of 50, and
// real-time (SCHED_FIFO, where permitted: root; one step above the rest of
// the process if that is real-time already), so that neither a server nor
// a reader busy on every core delays a publish. It takes a few µs per
// event. The thread ends with the goroutine (it stays locked).
func pacingThread() {
	runtime.LockOSThread()
	const prSetTimerslack, schedFIFO = 29, 1
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
	var prio int32
	policy, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
	if e != 0 {
		return
	}
	if policy == schedFIFO {
		_, _, _ = syscall.RawSyscall(syscall.SYS_SCHED_GETPARAM, 0, uintptr(unsafe.Pointer(&prio)), 0)
	}
	prio++
	_, _, _ = syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedFIFO, uintptr(unsafe.Pointer(&prio)))
}

// sleepUntil sleeps until t by the realtime clock (an absolute
// clock_nanosleep: no drift from the time the call takes).
func sleepUntil(t time.Time) {
	ts := syscall.NsecToTimespec(t.UnixNano())
	const clockRealtime, timerAbstime = 0, 1
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_CLOCK_NANOSLEEP, clockRealtime, timerAbstime, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e != syscall.EINTR {
			return
		}
	}
}
