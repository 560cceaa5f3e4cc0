package evroute

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

const filterStatus = `{"id":"1","visibility":"public","reblog":null,"in_reply_to_account_id":null,"content":"<p>Read Dune</p>","account":{"id":"1","acct":"alice"},"media_attachments":[],"mentions":[],"tags":[]}`

func TestKeywordFiltersBlockedByAndOrigin(t *testing.T) {
	e := newEngine(t, Config{})
	expires := time.Date(2099, 1, 2, 3, 4, 5, 6e6, time.FixedZone("", 3600))
	annotated := newSub(t, e, SubscriberOptions{KeywordFilters: []KeywordFilter{{
		ID: "5", Title: "Sci-fi", ExpiresAt: &expires,
		Keywords: []FilterKeyword{{Keyword: "DUNE", WholeWord: true}},
	}}}, Subscription{Stream: "public"})
	empty := newSub(t, e, SubscriberOptions{KeywordFilters: []KeywordFilter{}}, Subscription{Stream: "public"})
	plain := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	blocked := newSub(t, e, SubscriberOptions{BlockedByAccounts: []string{"1"}}, Subscription{Stream: "public"})
	remote := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public", Origin: "remote"})

	mustPublish(t, e, []byte(`{"event":"update","payload":`+filterStatus+`}`))
	body := strings.TrimSuffix(filterStatus, "}")
	want := body + `,"filtered":[{"filter":{"id":"5","title":"Sci-fi","context":[],"expires_at":"2099-01-02T02:04:05.006Z","filter_action":"warn"},"keyword_matches":["Dune"],"status_matches":null}]}`
	expect(t, annotated, "update", []byte(want), "public")
	expect(t, empty, "update", []byte(body+`,"filtered":[]}`), "public")
	expect(t, plain, "update", []byte(filterStatus), "public")
	expectEmpty(t, blocked)
	expectEmpty(t, remote)

	// Update replaces the whole state; a nil KeywordFilters ends annotation.
	if err := annotated.Update(Filters{BlockedAccounts: []string{"9"}}); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, e, []byte(`{"event":"update","payload":`+filterStatus+`}`))
	expect(t, annotated, "update", []byte(filterStatus), "public")

	// A malformed filter is refused with its name and leaves the state.
	err := empty.UpdateJSON([]byte(`{"keyword_filters":[{"id":"7","title":"t"}]}`))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), `keyword_filters[0] (id "7"): keywords is missing`) {
		t.Fatalf("got %v", err)
	}
	if err := plain.Subscribe(Subscription{Stream: "list", List: "1", Origin: "local"}); err == nil {
		t.Fatal("origin on a list stream was accepted")
	}
}

func TestKeywordFiltersJSONPresence(t *testing.T) {
	for _, c := range []struct {
		opts SubscriberOptions
		want string
	}{
		{SubscriberOptions{}, `{}`},
		{SubscriberOptions{KeywordFilters: []KeywordFilter{}}, `{"keyword_filters":[]}`},
		{SubscriberOptions{KeywordFilters: []KeywordFilter{{ID: "1"}}}, `{"keyword_filters":[{"id":"1","title":"","context":[],"expires_at":null,"keywords":[]}]}`},
	} {
		got, err := json.Marshal(c.opts)
		if err != nil || string(got) != c.want {
			t.Fatalf("got %s %v, want %s", got, err, c.want)
		}
	}
}
