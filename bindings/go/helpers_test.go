package evroute

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Expected frames are built here from the corpus bytes and SPEC §4, never
// taken from evroute itself.

const corpusDir = "../../corpus"

func corpus(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimRight(b, "\n")
}

func mastodonFiles(t testing.TB) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(corpusDir, "mastodon", "*.json"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	sort.Strings(names)
	for i, n := range names {
		names[i] = "mastodon/" + filepath.Base(n)
	}
	return names
}

// mastodon is the corpus file whose name starts with prefix ("08").
func mastodon(t testing.TB, prefix string) string {
	t.Helper()
	for _, n := range mastodonFiles(t) {
		if strings.HasPrefix(filepath.Base(n), prefix+"-") {
			return n
		}
	}
	t.Fatalf("no corpus file %s", prefix)
	return ""
}

// payloadOf is the payload string of a corpus envelope: the raw text of an
// object payload or the contents of a string payload. The corpus writes
// `"payload": ` before P and ends with P and one `}`.
func payloadOf(t testing.TB, doc []byte) []byte {
	t.Helper()
	key := []byte(`"payload": `)
	i := bytes.Index(doc, key)
	if i < 0 || doc[len(doc)-1] != '}' {
		t.Fatalf("not an envelope: %.60s", doc)
	}
	body := doc[i+len(key) : len(doc)-1]
	if body[0] == '"' {
		body = body[1 : 1+bytes.IndexByte(body[1:], '"')]
	}
	return body
}

func eventName(t testing.TB, doc []byte) string {
	t.Helper()
	var env struct{ Event string }
	if err := json.Unmarshal(doc, &env); err != nil {
		t.Fatal(err)
	}
	return env.Event
}

func jsonEscaped(b []byte) []byte {
	var out bytes.Buffer
	for _, c := range b {
		switch c {
		case '"':
			out.WriteString(`\"`)
		case '\\':
			out.WriteString(`\\`)
		case '\n':
			out.WriteString(`\n`)
		case '\r':
			out.WriteString(`\r`)
		case '\t':
			out.WriteString(`\t`)
		case '\b':
			out.WriteString(`\b`)
		case '\f':
			out.WriteString(`\f`)
		default:
			if c < 0x20 {
				fmt.Fprintf(&out, `\u%04x`, c)
			} else {
				out.WriteByte(c)
			}
		}
	}
	return out.Bytes()
}

// sseBytes is SPEC §4's SSE frame; payload nil = absent.
func sseBytes(event string, payload []byte) []byte {
	data := payload
	if data == nil {
		data = []byte("undefined")
	}
	return []byte("event: " + event + "\ndata: " + string(data) + "\n\n")
}

func wsBytes(stream []string, event string, payload []byte) []byte {
	arr, _ := json.Marshal(stream)
	s := `{"stream":` + string(arr) + `,"event":"` + event + `"`
	if payload == nil {
		return []byte(s + "}")
	}
	return []byte(s + `,"payload":"` + string(jsonEscaped(payload)) + `"}`)
}

// withFields puts extra top-level keys (recipients, lists) first in the envelope.
func withFields(doc []byte, fields string) []byte {
	return []byte("{" + fields + ", " + string(doc[1:]))
}
