package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// streamConn is one client past its handshake: the connection, the
// parser of its stream (SSE or WebSocket) and what the handshake read
// beyond its response head.
type streamConn struct {
	conn    net.Conn
	p       parser
	pending []byte
}

// parser turns a stream's bytes into what its lineSink takes: SSE lines,
// or whole WebSocket messages.
type parser interface {
	feed(b []byte, out lineSink) error
}

// dialSSE opens client i's stream and returns once the server has sent its
// first line (":)" on Mastodon, once subscribed).
func (g *loadgen) dialSSE(ctx context.Context, i int) (*streamConn, error) {
	path := "/api/v1/streaming/public"
	if g.stream != "public" {
		path = "/api/v1/streaming/user"
	}
	p := &sseParser{}
	return g.dial(ctx, i, p, func(c *streamConn, host string) error {
		return c.sseHandshake(p, host, path, g.firstToken+i)
	})
}

// dial connects client i to the server, read through p once handshake
// (SSE or WebSocket) has succeeded; the connection is closed if it fails.
func (g *loadgen) dial(ctx context.Context, i int, p parser, handshake func(c *streamConn, host string) error) (*streamConn, error) {
	u, err := url.Parse(g.base)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	c := &streamConn{conn: conn, p: p}
	if err := handshake(c, u.Host); err != nil {
		conn.Close()
		return nil, fmt.Errorf("client %d: %w", i, err)
	}
	return c, nil
}

func (c *streamConn) sseHandshake(p *sseParser, host, path string, token int) error {
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.conn.SetDeadline(time.Time{})
	fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer benchtok%d\r\nAccept: text/event-stream\r\n\r\n",
		path, host, token)
	br := bufio.NewReader(c.conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("%s %s", resp.Status, b)
	}
	p.chunked = len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	// From here on the parser sees the raw bytes: what the head's reader
	// took beyond the head first, then the socket's.
	var first firstLine
	rest, _ := br.Peek(br.Buffered())
	if err := p.feed(rest, &first); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for !first.seen {
		n, err := c.conn.Read(buf)
		if n > 0 {
			if err := p.feed(buf[:n], &first); err != nil {
				return err
			}
		}
		if err != nil {
			return fmt.Errorf("before the first line: %w", err)
		}
	}
	return nil
}

// sseParser turns the bytes of an SSE response (chunked or not) into
// lines, whatever the reads' boundaries; only a line split across reads
// is copied.
type sseParser struct {
	chunked bool
	left    int    // chunked: data bytes left in the current chunk (0: a size line is next)
	size    []byte // chunked: a size line split across reads
	line    []byte // a line split across reads
}

var errStreamEnd = fmt.Errorf("the server ended the stream")

// lineSink takes the lines of a stream (without their "\n"; valid only
// during the call).
type lineSink interface{ line([]byte) }

// firstLine notes a comment line: Mastodon's ":)" once subscribed.
type firstLine struct{ seen bool }

func (f *firstLine) line(b []byte) { f.seen = f.seen || bytes.HasPrefix(b, []byte(":")) }

// feed parses b, handing every complete line to onLine.
func (p *sseParser) feed(b []byte, onLine lineSink) error {
	if !p.chunked {
		p.lines(b, onLine)
		return nil
	}
	for len(b) > 0 {
		if p.left > 0 {
			n := min(p.left, len(b))
			p.lines(b[:n], onLine)
			p.left -= n
			b = b[n:]
			continue
		}
		// A size line; the CRLF that ends a chunk's data reads as an
		// empty one.
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			p.size = append(p.size, b...)
			return nil
		}
		sz := b[:nl]
		if len(p.size) > 0 {
			p.size = append(p.size, sz...)
			sz = p.size
		}
		b = b[nl+1:]
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i] // a chunk extension
		}
		sz = bytes.TrimSpace(sz)
		if len(sz) == 0 {
			p.size = p.size[:0]
			continue
		}
		n, err := strconv.ParseUint(string(sz), 16, 31)
		p.size = p.size[:0]
		switch {
		case err != nil:
			return fmt.Errorf("bad chunk size %q", sz)
		case n == 0:
			return errStreamEnd
		}
		p.left = int(n)
	}
	return nil
}

func (p *sseParser) lines(b []byte, onLine lineSink) {
	for {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			p.line = append(p.line, b...)
			return
		}
		if len(p.line) > 0 {
			p.line = append(p.line, b[:nl]...)
			onLine.line(p.line)
			p.line = p.line[:0]
		} else {
			onLine.line(b[:nl])
		}
		b = b[nl+1:]
	}
}

// recorder accounts the frames one reader receives (SSE data lines, or
// WebSocket messages), with the times of the read they came in.
type recorder struct {
	g             *loadgen
	l             latencies
	arrived, read int64 // UnixNano
}

func (r *recorder) line(b []byte) {
	if r.g.transport == "ws" || len(b) > 6 && string(b[:6]) == "data: " {
		r.g.record(&r.l, b, r.arrived, r.read)
	}
}
