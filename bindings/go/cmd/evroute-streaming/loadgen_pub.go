package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// pacedPublisher publishes on a Redis connection of its own: each PUBLISH
// is written the moment after its publish time is taken, and the replies
// are read by another goroutine, so a publish never waits for the one
// before it (go-redis would wait for each reply, and a reply that has to
// wait for a busy CPU would make the next event late).
type pacedPublisher struct {
	conn    net.Conn
	cmd     []byte
	replies atomic.Int64 // integer replies read so far
	failed  chan error   // the reader's first error (buffered)
}

func dialPaced(ctx context.Context, opts *redis.Options) (*pacedPublisher, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	p := &pacedPublisher{conn: conn, failed: make(chan error, 1)}
	br := bufio.NewReader(conn)
	if opts.Password != "" {
		auth := []string{"AUTH", opts.Password}
		if opts.Username != "" {
			auth = []string{"AUTH", opts.Username, opts.Password}
		}
		if _, err := conn.Write(appendCommand(nil, auth...)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("publisher: %w", err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != "+OK\r\n" {
			conn.Close()
			return nil, fmt.Errorf("publisher: AUTH: %q %v", line, err)
		}
	}
	go p.readReplies(br)
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

// readReplies counts PUBLISH's integer replies until the connection ends.
func (p *pacedPublisher) readReplies(br *bufio.Reader) {
	for {
		line, err := br.ReadString('\n')
		if err != nil || len(line) < 3 || line[0] != ':' {
			if err == nil {
				err = fmt.Errorf("unexpected reply %q", line)
			}
			select {
			case p.failed <- err:
			default:
			}
			return
		}
		p.replies.Add(1)
	}
}

// publish writes one PUBLISH per channel of msg and stamps *sent with the
// time right before the write.
func (p *pacedPublisher) publish(channels []string, msg []byte, sent *int64) error {
	p.cmd = p.cmd[:0]
	for _, ch := range channels {
		p.cmd = appendCommand(p.cmd, "PUBLISH", ch, string(msg))
	}
	atomic.StoreInt64(sent, time.Now().UnixNano())
	_, err := p.conn.Write(p.cmd)
	return err
}

// close waits up to timeout for the replies to want PUBLISH commands,
// then closes the connection.
func (p *pacedPublisher) close(want int64, timeout time.Duration) error {
	defer p.conn.Close()
	for end := time.Now().Add(timeout); p.replies.Load() < want; time.Sleep(time.Millisecond) {
		select {
		case err := <-p.failed:
			return fmt.Errorf("publish: %w", err)
		default:
		}
		if time.Now().After(end) {
			return errors.New("publish: Redis did not answer every PUBLISH")
		}
	}
	return nil
}
