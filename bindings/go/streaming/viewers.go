package streaming

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
)

// Viewer is an account's viewer state (docs/protocol.md, "Viewer filters"): what the engine
// filters and annotates public and hashtag streams with, in memory.
type Viewer struct {
	Languages       []string // chosen languages; empty: all
	BlockedAccounts []string
	BlockedBy       []string // accounts that block the viewer
	MutedAccounts   []string
	BlockedDomains  []string
	KeywordFilters  []KeywordFilter
}

// KeywordFilter is one of the viewer's keyword filters (Mastodon's
// custom_filters with their custom_filter_keywords), as the engine takes it.
type KeywordFilter struct {
	ID           string    `json:"id"`
	Title        string    `json:"title"`
	Context      []string  `json:"context"`
	ExpiresAt    *string   `json:"expires_at"` // "2026-12-01T00:00:00.000Z" or null
	FilterAction string    `json:"filter_action"`
	Keywords     []Keyword `json:"keywords"`
}

// Keyword is one keyword of a filter.
type Keyword struct {
	Keyword   string `json:"keyword"`
	WholeWord bool   `json:"whole_word"`
}

// ViewerStore loads viewer state. LoadViewers is called with one account
// when it connects and with batches of connected accounts on every refresh;
// an account missing from the result gets an empty state.
type ViewerStore interface {
	LoadViewers(ctx context.Context, accountIDs []string) (map[string]*Viewer, error)
}

// viewerJSON is the engine's viewer state object. keyword_filters is always
// present: every authenticated client is filter-annotated, as in Mastodon.
type viewerJSON struct {
	Languages       []string        `json:"languages,omitempty"`
	BlockedAccounts []string        `json:"blocked_accounts,omitempty"`
	BlockedBy       []string        `json:"blocked_by_accounts,omitempty"`
	MutedAccounts   []string        `json:"muted_accounts,omitempty"`
	BlockedDomains  []string        `json:"blocked_domains,omitempty"`
	KeywordFilters  []KeywordFilter `json:"keyword_filters"`
}

func (v *Viewer) engineJSON() ([]byte, error) {
	if v == nil {
		v = &Viewer{}
	}
	out := viewerJSON{v.Languages, v.BlockedAccounts, v.BlockedBy, v.MutedAccounts, v.BlockedDomains, v.KeywordFilters}
	if out.KeywordFilters == nil {
		out.KeywordFilters = []KeywordFilter{}
	}
	return json.Marshal(out)
}

// account is the state shared by one account's connections: its viewer
// state is loaded once, and a reload updates every subscriber of it.
type account struct {
	id     string
	refs   int
	ready  chan struct{} // closed once the first load finished
	err    error         // of the first load
	mu     sync.Mutex    // guards filters and conns
	filter []byte        // the engine's filters JSON
	conns  map[*conn]struct{}
}

type accounts struct {
	h  *Handler
	mu sync.Mutex
	m  map[string]*account
}

// acquire returns the account's shared state, loading it on first use.
func (as *accounts) acquire(ctx context.Context, id string) (*account, error) {
	as.mu.Lock()
	a := as.m[id]
	if a == nil {
		a = &account{id: id, ready: make(chan struct{}), conns: map[*conn]struct{}{}}
		as.m[id] = a
		a.refs++
		as.mu.Unlock()
		a.err = as.load(ctx, []string{id})
		close(a.ready)
	} else {
		a.refs++
		as.mu.Unlock()
		<-a.ready
	}
	if a.err != nil {
		as.release(a)
		return nil, a.err
	}
	return a, nil
}

func (as *accounts) release(a *account) {
	as.mu.Lock()
	defer as.mu.Unlock()
	a.refs--
	if a.refs == 0 {
		delete(as.m, a.id)
	}
}

// load fetches the viewer state of ids and applies it to their accounts.
func (as *accounts) load(ctx context.Context, ids []string) error {
	start := time.Now()
	viewers, err := as.h.opts.Viewers.LoadViewers(ctx, ids)
	as.h.metrics.reloadSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		as.h.metrics.reloads.WithLabelValues("error").Inc()
		return err
	}
	as.h.metrics.reloads.WithLabelValues("ok").Add(float64(len(ids)))
	as.mu.Lock()
	accs := make([]*account, 0, len(ids))
	for _, id := range ids {
		if a := as.m[id]; a != nil {
			accs = append(accs, a)
		}
	}
	as.mu.Unlock()
	for _, a := range accs {
		raw, err := viewers[a.id].engineJSON()
		if err != nil {
			return err
		}
		a.apply(raw, as.h)
	}
	return nil
}

// apply replaces the account's filters and updates its subscribers when
// they changed.
func (a *account) apply(raw []byte, h *Handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if bytes.Equal(a.filter, raw) {
		return
	}
	a.filter = raw
	for c := range a.conns {
		if err := c.sub.UpdateJSON(raw); err != nil {
			h.log.Error("viewer state update failed", "account", a.id, "err", err)
		}
	}
}

// attach adds a connection's subscriber to the account, creating it with
// the current filters under the account lock, so no reload is missed.
func (a *account) attach(c *conn, newSub func(filters []byte) (*evroute.Subscriber, error)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	sub, err := newSub(a.filter)
	if err != nil {
		return err
	}
	c.sub = sub
	a.conns[c] = struct{}{}
	return nil
}

func (a *account) detach(c *conn) {
	a.mu.Lock()
	delete(a.conns, c)
	a.mu.Unlock()
}

// Reload reloads one account's viewer state now (filters_changed, or a
// database notification). It is a no-op for an account without connections.
func (h *Handler) Reload(ctx context.Context, accountID string) error {
	h.accounts.mu.Lock()
	_, ok := h.accounts.m[accountID]
	h.accounts.mu.Unlock()
	if !ok {
		return nil
	}
	return h.accounts.load(ctx, []string{accountID})
}

// refreshBatch is how many accounts one refresh query loads.
const refreshBatch = 500

// RefreshAll reloads the viewer state of every connected account, in batches.
func (h *Handler) RefreshAll(ctx context.Context) error {
	h.accounts.mu.Lock()
	ids := make([]string, 0, len(h.accounts.m))
	for id := range h.accounts.m {
		ids = append(ids, id)
	}
	h.accounts.mu.Unlock()
	for len(ids) > 0 {
		n := min(len(ids), refreshBatch)
		if err := h.accounts.load(ctx, ids[:n]); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func (h *Handler) refreshLoop() {
	t := time.NewTicker(h.opts.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), h.opts.RefreshInterval)
			h.loadFeedAccess(ctx)
			if err := h.RefreshAll(ctx); err != nil {
				h.log.Error("viewer state refresh failed", "err", err)
			}
			cancel()
		}
	}
}
