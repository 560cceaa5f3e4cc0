package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// dialWS opens client i's WebSocket (RFC 6455 handshake, the token as
// subprotocol) and returns once the server accepted it. Its frames are then
// read by the same readers as SSE streams, through a wsParser.
func (g *loadgen) dialWS(ctx context.Context, i int) (*streamConn, error) {
	stream := "public"
	if g.stream != "public" {
		stream = "user"
	}
	p := &wsParser{}
	return g.dial(ctx, i, p, func(c *streamConn, host string) error {
		return c.wsHandshake(host, "/api/v1/streaming/?stream="+stream, fmt.Sprintf("benchtok%d", g.firstToken+i))
	})
}

func (c *streamConn) wsHandshake(host, path, token string) error {
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.conn.SetDeadline(time.Time{})
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n", path, host, key, token)
	br := bufio.NewReader(c.conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("%s %s", resp.Status, b)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return errors.New("bad Sec-WebSocket-Accept")
	}
	// Frames the head's reader took beyond the head come first.
	rest, _ := br.Peek(br.Buffered())
	c.pending = append([]byte(nil), rest...)
	return nil
}

// wsParser turns the bytes a WebSocket server sends into messages (text
// or binary, fragmented or not), whatever the reads' boundaries; it answers
// pings through reply and ends at a close frame.
type wsParser struct {
	hdr   []byte // the current frame's header, while incomplete
	left  int    // payload bytes left in the current frame
	inFr  bool   // in a frame's payload
	op    byte   // the current frame's opcode
	fin   bool   // the current frame ends its message
	msg   []byte // the message so far
	ctl   []byte // a control frame's payload so far
	reply func([]byte) error
}

// maxMessage bounds a message, as the old reader's SetReadLimit did.
const maxMessage = 16 << 20

func (p *wsParser) feed(b []byte, out lineSink) error {
	for len(b) > 0 {
		if !p.inFr {
			need := 2
			if len(p.hdr) >= 2 {
				switch p.hdr[1] & 0x7f {
				case 126:
					need = 4
				case 127:
					need = 10
				}
			}
			if len(p.hdr) < need {
				n := min(need-len(p.hdr), len(b))
				p.hdr = append(p.hdr, b[:n]...)
				b = b[n:]
				if len(p.hdr) < need || need == 2 && p.hdr[1]&0x7f >= 126 {
					continue // more header to come
				}
			}
			if p.hdr[1]&0x80 != 0 {
				return errors.New("a masked frame from the server")
			}
			var size uint64
			switch need {
			case 2:
				size = uint64(p.hdr[1] & 0x7f)
			case 4:
				size = uint64(binary.BigEndian.Uint16(p.hdr[2:]))
			default:
				size = binary.BigEndian.Uint64(p.hdr[2:])
			}
			if size > maxMessage || len(p.msg)+int(size) > maxMessage {
				return fmt.Errorf("a message over %d bytes", maxMessage)
			}
			p.op, p.fin, p.left, p.inFr = p.hdr[0]&0x0f, p.hdr[0]&0x80 != 0, int(size), true
			p.hdr = p.hdr[:0]
		}
		n := min(p.left, len(b))
		if p.op >= 8 {
			p.ctl = append(p.ctl, b[:n]...)
		} else {
			p.msg = append(p.msg, b[:n]...)
		}
		p.left -= n
		b = b[n:]
		if p.left > 0 {
			continue
		}
		p.inFr = false
		if err := p.frameEnd(out); err != nil {
			return err
		}
	}
	return nil
}

func (p *wsParser) frameEnd(out lineSink) error {
	switch {
	case p.op == 8: // close
		return errStreamEnd
	case p.op == 9: // ping: a pong with the same payload, masked (with a zero key) as clients must
		pong := append([]byte{0x8a, 0x80 | byte(len(p.ctl)), 0, 0, 0, 0}, p.ctl...)
		p.ctl = p.ctl[:0]
		if p.reply != nil {
			return p.reply(pong)
		}
	case p.op >= 8:
		p.ctl = p.ctl[:0]
	case p.fin:
		out.line(p.msg)
		p.msg = p.msg[:0]
	}
	return nil
}
