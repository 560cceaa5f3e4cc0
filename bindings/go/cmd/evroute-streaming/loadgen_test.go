package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"net/http/httputil"
	"strings"
	"testing"
)

type lineList struct{ lines []string }

func (l *lineList) line(b []byte) { l.lines = append(l.lines, string(b)) }

// sseLines is a random SSE stream's lines: comments, events and data lines
// from empty to longer than a read.
func sseLines(r *rand.Rand) []string {
	var lines []string
	for i := r.Intn(40); i > 0; i-- {
		switch r.Intn(4) {
		case 0:
			lines = append(lines, ":thump")
		case 1:
			lines = append(lines, "event: update")
		case 2:
			lines = append(lines, "")
		default:
			lines = append(lines, "data: "+strings.Repeat("x;\r0", r.Intn(3000)))
		}
	}
	return lines
}

// chunked encodes b as HTTP/1.1 chunks of random sizes (some with an
// extension) through net/http's own writer.
func chunked(r *rand.Rand, b []byte) []byte {
	var out bytes.Buffer
	w := httputil.NewChunkedWriter(&out)
	for len(b) > 0 {
		n := min(len(b), 1+r.Intn(5000))
		_, _ = w.Write(b[:n])
		b = b[n:]
	}
	enc := out.Bytes()
	if r.Intn(2) == 0 { // an extension on the first size line
		if i := bytes.IndexByte(enc, '\r'); i > 0 {
			enc = append(append(append([]byte{}, enc[:i]...), ";ext=1"...), enc[i:]...)
		}
	}
	return enc
}

// The parser yields the stream's lines whatever the chunking and the
// reads' boundaries (the model: the lines as written).
func TestSSEParserModel(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for iter := 0; iter < 500; iter++ {
		want := sseLines(r)
		raw := []byte(strings.Join(append(want, ""), "\n")) // every line ends in \n
		p := sseParser{chunked: iter%2 == 0}
		wire := raw
		if p.chunked {
			wire = chunked(r, raw)
		}
		var got lineList
		for len(wire) > 0 {
			n := min(len(wire), 1+r.Intn(9000))
			if err := p.feed(wire[:n], &got); err != nil {
				t.Fatalf("iteration %d: %v", iter, err)
			}
			wire = wire[n:]
		}
		if fmt.Sprint(got.lines) != fmt.Sprint(want) {
			t.Fatalf("iteration %d (chunked %v): %d lines, want %d", iter, p.chunked, len(got.lines), len(want))
		}
	}
}

func TestSSEParserChunkErrors(t *testing.T) {
	var l lineList
	p := sseParser{chunked: true}
	if err := p.feed([]byte("3\r\n:)\n\r\n0\r\n\r\n"), &l); !errors.Is(err, errStreamEnd) || len(l.lines) != 1 {
		t.Fatalf("last chunk: %v %q", err, l.lines)
	}
	p = sseParser{chunked: true}
	if err := p.feed([]byte("zz\r\n"), &l); err == nil || !strings.Contains(err.Error(), `bad chunk size "zz"`) {
		t.Fatalf("bad size: %v", err)
	}
}

// statusID finds the event number in an SSE data line and in a WebSocket
// message (where the payload is an escaped string).
func TestStatusID(t *testing.T) {
	tpl := messageTemplate()
	msg := message(tpl, 4711)
	payload := msg[bytes.Index(msg, []byte(`"payload":`))+len(`"payload":`) : bytes.LastIndex(msg, []byte(`,"queued_at"`))]
	sse := append([]byte("data: "), payload...)
	quoted := fmt.Sprintf(`{"stream":["public"],"event":"update","payload":%q}`, payload)
	for _, frame := range [][]byte{sse, []byte(quoted)} {
		if n, ok := statusID(frame); !ok || n != 4711 {
			t.Fatalf("%d %v in %.80s", n, ok, frame)
		}
	}
	if _, ok := statusID([]byte(`data: {"id":"x"}`)); ok {
		t.Fatal("a frame without an event number")
	}
}
