package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// pacedPublisher publishes on a Redis connection of its own: each PUBLISH
// is written the moment after its publish time is taken, and the replies
// that have come are read without waiting after each write (and the rest
// at the end), so a publish never waits for the one before it: go-redis
// waits for each reply, and a goroutine that reads them would take a P
// that the publisher needs when it wakes.
type pacedPublisher struct {
	conn    net.Conn
	raw     syscall.RawConn
	cmd     []byte
	buf     []byte
	replies int64 // integer replies read so far
	midLine bool  // a reply's line began in an earlier read
}

func dialPaced(ctx context.Context, opts *redis.Options) (*pacedPublisher, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	p := &pacedPublisher{conn: conn, buf: make([]byte, 64<<10)}
	if opts.Password != "" {
		auth := []string{"AUTH", opts.Password}
		if opts.Username != "" {
			auth = []string{"AUTH", opts.Username, opts.Password}
		}
		line, err := "", error(nil)
		if _, err = conn.Write(appendCommand(nil, auth...)); err == nil {
			line, err = bufio.NewReader(conn).ReadString('\n') // nothing else is sent yet
		}
		if err != nil || line != "+OK\r\n" {
			conn.Close()
			return nil, fmt.Errorf("publisher: AUTH: %q %v", line, err)
		}
	}
	if sc, ok := conn.(syscall.Conn); ok {
		p.raw, err = sc.SyscallConn()
	}
	if p.raw == nil {
		conn.Close()
		return nil, fmt.Errorf("publisher: not a socket (%v)", err)
	}
	return p, nil
}

// appendCommand appends a RESP command of bulk strings.
func appendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, "\r\n"...)
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, "\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// count accounts the replies in b: PUBLISH answers with an integer line.
func (p *pacedPublisher) count(b []byte) error {
	for len(b) > 0 {
		if !p.midLine && b[0] != ':' {
			line, _, _ := bytes.Cut(b, []byte("\r\n"))
			return fmt.Errorf("publish: Redis answered %q", line)
		}
		i := bytes.IndexByte(b, '\n')
		if p.midLine = i < 0; p.midLine {
			return nil
		}
		p.replies++
		b = b[i+1:]
	}
	return nil
}

// drain reads the replies that have come, without waiting.
func (p *pacedPublisher) drain() error {
	for {
		var n int
		var rerr error
		if err := p.raw.Read(func(fd uintptr) bool {
			n, rerr = syscall.Read(int(fd), p.buf)
			return true
		}); err != nil {
			return err
		}
		switch {
		case rerr == syscall.EAGAIN:
			return nil
		case rerr != nil:
			return rerr
		case n == 0:
			return errors.New("publish: Redis closed the connection")
		}
		if err := p.count(p.buf[:n]); err != nil {
			return err
		}
	}
}

// publish writes one PUBLISH per channel of msg, stamping *sent with the
// time right before the write, then reads the replies that have come.
func (p *pacedPublisher) publish(channels []string, msg []byte, sent *int64) error {
	p.cmd = p.cmd[:0]
	for _, ch := range channels {
		p.cmd = appendCommand(p.cmd, "PUBLISH", ch, string(msg))
	}
	atomic.StoreInt64(sent, time.Now().UnixNano())
	if _, err := p.conn.Write(p.cmd); err != nil {
		return err
	}
	return p.drain()
}

// close reads the replies until want have come (waiting up to timeout),
// then closes the connection.
func (p *pacedPublisher) close(want int64, timeout time.Duration) error {
	defer p.conn.Close()
	_ = p.conn.SetReadDeadline(time.Now().Add(timeout))
	for p.replies < want {
		n, err := p.conn.Read(p.buf)
		if err != nil {
			return fmt.Errorf("publish: %d of %d replies: %w", p.replies, want, err)
		}
		if err := p.count(p.buf[:n]); err != nil {
			return err
		}
	}
	return nil
}
