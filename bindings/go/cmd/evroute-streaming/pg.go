package main

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/evroute/evroute/bindings/go/streaming"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgStore is TokenStore and ViewerStore over Mastodon's schema.
type pgStore struct {
	pool *pgPool
}

// pgPool counts the queries waiting for a connection, Mastodon's
// pg_pool_waiting_queries (pgxpool keeps no such count).
type pgPool struct {
	*pgxpool.Pool
	waiting atomic.Int64
}

func (p *pgPool) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	return p.Pool.Acquire(ctx)
}

// tokenQuery is Mastodon's token lookup: not revoked, user not disabled,
// account not suspended, with the role's permissions.
const tokenQuery = `SELECT t.id, u.account_id, COALESCE(t.scopes, ''), COALESCE(r.permissions, 0)
FROM oauth_access_tokens t
JOIN users u ON t.resource_owner_id = u.id
JOIN accounts a ON u.account_id = a.id
LEFT OUTER JOIN user_roles r ON u.role_id = r.id
WHERE t.token = $1 AND t.revoked_at IS NULL AND NOT u.disabled AND a.suspended_at IS NULL
LIMIT 1`

func (s *pgStore) Authenticate(ctx context.Context, token string) (*streaming.Identity, error) {
	conn, err := s.pool.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	var tokenID, accountID, perms int64
	var scopes string
	err = conn.QueryRow(ctx, tokenQuery, token).Scan(&tokenID, &accountID, &scopes, &perms)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, streaming.ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	return &streaming.Identity{
		TokenID:     strconv.FormatInt(tokenID, 10),
		AccountID:   strconv.FormatInt(accountID, 10),
		Scopes:      strings.Fields(scopes),
		Permissions: perms,
	}, nil
}

func (s *pgStore) ListOwned(ctx context.Context, accountID, listID string) (bool, error) {
	conn, err := s.pool.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	var one int
	err = conn.QueryRow(ctx, `SELECT 1 FROM lists WHERE id = $1 AND account_id = $2 LIMIT 1`, listID, accountID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// viewerQueries load every account's state in one round trip; each yields
// (account id, value) rows.
var viewerQueries = []struct {
	sql   string
	field func(v *streaming.Viewer) *[]string
}{
	{`SELECT account_id, unnest(chosen_languages) FROM users WHERE account_id = ANY($1)`,
		func(v *streaming.Viewer) *[]string { return &v.Languages }},
	{`SELECT account_id, target_account_id::text FROM blocks WHERE account_id = ANY($1)`,
		func(v *streaming.Viewer) *[]string { return &v.BlockedAccounts }},
	{`SELECT target_account_id, account_id::text FROM blocks WHERE target_account_id = ANY($1)`,
		func(v *streaming.Viewer) *[]string { return &v.BlockedBy }},
	{`SELECT account_id, target_account_id::text FROM mutes WHERE account_id = ANY($1)`,
		func(v *streaming.Viewer) *[]string { return &v.MutedAccounts }},
	{`SELECT account_id, domain FROM account_domain_blocks WHERE account_id = ANY($1) AND domain IS NOT NULL`,
		func(v *streaming.Viewer) *[]string { return &v.BlockedDomains }},
}

func (s *pgStore) LoadViewers(ctx context.Context, accountIDs []string) (map[string]*streaming.Viewer, error) {
	ids := make([]int64, 0, len(accountIDs))
	out := make(map[string]*streaming.Viewer, len(accountIDs))
	for _, id := range accountIDs {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			continue // not a Mastodon account id: no state
		}
		ids = append(ids, n)
		out[id] = &streaming.Viewer{}
	}
	batch := &pgx.Batch{}
	for _, q := range viewerQueries {
		batch.Queue(q.sql, ids)
	}
	batch.Queue(filtersQuery, ids)
	conn, err := s.pool.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	br := conn.SendBatch(ctx, batch)
	defer br.Close()
	for _, q := range viewerQueries {
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		var acct int64
		var val string
		_, err = pgx.ForEachRow(rows, []any{&acct, &val}, func() error {
			if v := out[strconv.FormatInt(acct, 10)]; v != nil {
				f := q.field(v)
				*f = append(*f, val)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := scanFilters(br, out); err != nil {
		return nil, err
	}
	return out, br.Close()
}

// filtersQuery is Mastodon's fetchFilters for many accounts: unexpired
// filters with their keywords, in filter id order as Mastodon lists them.
const filtersQuery = `SELECT f.account_id, f.id, f.phrase, f.context, f.expires_at, f.action, k.keyword, k.whole_word
FROM custom_filter_keywords k JOIN custom_filters f ON k.custom_filter_id = f.id
WHERE f.account_id = ANY($1) AND (f.expires_at IS NULL OR f.expires_at > now())
ORDER BY f.account_id, f.id, k.id`

// filterActions are Rails' enum values of custom_filters.action that
// Mastodon's streaming server knows.
var filterActions = map[int32]string{0: "warn", 1: "hide"}

func scanFilters(br pgx.BatchResults, out map[string]*streaming.Viewer) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	var (
		acct, id  int64
		phrase    string
		context   []string
		expiresAt *time.Time
		action    int32
		keyword   string
		wholeWord bool
	)
	_, err = pgx.ForEachRow(rows, []any{&acct, &id, &phrase, &context, &expiresAt, &action, &keyword, &wholeWord}, func() error {
		v := out[strconv.FormatInt(acct, 10)]
		act, known := filterActions[action]
		if v == nil || !known {
			return nil
		}
		fid := strconv.FormatInt(id, 10)
		n := len(v.KeywordFilters)
		if n == 0 || v.KeywordFilters[n-1].ID != fid {
			f := streaming.KeywordFilter{ID: fid, Title: phrase, Context: context, FilterAction: act}
			if f.Context == nil {
				f.Context = []string{}
			}
			if expiresAt != nil {
				// Rails stores UTC; JSON as JavaScript's Date writes it.
				e := expiresAt.UTC().Format("2006-01-02T15:04:05.000Z")
				f.ExpiresAt = &e
			}
			v.KeywordFilters = append(v.KeywordFilters, f)
			n++
		}
		kf := &v.KeywordFilters[n-1]
		kf.Keywords = append(kf.Keywords, streaming.Keyword{Keyword: keyword, WholeWord: wholeWord})
		return nil
	})
	return err
}

// FeedAccess reads Mastodon's feed-access settings ("--- disabled\n" in
// the settings table disables a side).
func (s *pgStore) FeedAccess(ctx context.Context) (streaming.FeedAccess, error) {
	var fa streaming.FeedAccess
	conn, err := s.pool.acquire(ctx)
	if err != nil {
		return fa, err
	}
	defer conn.Release()
	rows, err := conn.Query(ctx, `SELECT var, COALESCE(value, '') FROM settings WHERE var IN
		('local_live_feed_access', 'remote_live_feed_access', 'local_topic_feed_access', 'remote_topic_feed_access')`)
	if err != nil {
		return fa, err
	}
	fields := map[string]*bool{
		"local_live_feed_access": &fa.LocalLiveDisabled, "remote_live_feed_access": &fa.RemoteLiveDisabled,
		"local_topic_feed_access": &fa.LocalTopicDisabled, "remote_topic_feed_access": &fa.RemoteTopicDisabled,
	}
	var name, value string
	_, err = pgx.ForEachRow(rows, []any{&name, &value}, func() error {
		*fields[name] = strings.TrimSpace(strings.TrimPrefix(value, "---")) == "disabled"
		return nil
	})
	return fa, err
}

// notifyChannel is the Postgres channel install-triggers notifies with the
// account id whose viewer state changed.
const notifyChannel = "evroute_viewer_state"

// triggersSQL is the opt-in schema addition of install-triggers.
const triggersSQL = `
CREATE OR REPLACE FUNCTION evroute_notify_viewer_state() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
  PERFORM pg_notify('` + notifyChannel + `', r.account_id::text);
  IF TG_TABLE_NAME = 'blocks' THEN
    PERFORM pg_notify('` + notifyChannel + `', r.target_account_id::text);
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS evroute_viewer_state ON blocks;
CREATE TRIGGER evroute_viewer_state AFTER INSERT OR UPDATE OR DELETE ON blocks
  FOR EACH ROW EXECUTE FUNCTION evroute_notify_viewer_state();
DROP TRIGGER IF EXISTS evroute_viewer_state ON mutes;
CREATE TRIGGER evroute_viewer_state AFTER INSERT OR UPDATE OR DELETE ON mutes
  FOR EACH ROW EXECUTE FUNCTION evroute_notify_viewer_state();
DROP TRIGGER IF EXISTS evroute_viewer_state ON account_domain_blocks;
CREATE TRIGGER evroute_viewer_state AFTER INSERT OR UPDATE OR DELETE ON account_domain_blocks
  FOR EACH ROW EXECUTE FUNCTION evroute_notify_viewer_state();
DROP TRIGGER IF EXISTS evroute_viewer_state ON users;
CREATE TRIGGER evroute_viewer_state AFTER UPDATE OF chosen_languages ON users
  FOR EACH ROW EXECUTE FUNCTION evroute_notify_viewer_state();
DROP TRIGGER IF EXISTS evroute_viewer_state ON custom_filters;
CREATE TRIGGER evroute_viewer_state AFTER INSERT OR UPDATE OR DELETE ON custom_filters
  FOR EACH ROW EXECUTE FUNCTION evroute_notify_viewer_state();
`

func installTriggers(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, triggersSQL)
	return err
}

// listen reloads an account's viewer state whenever a trigger notifies it,
// until ctx ends; it reconnects after a failure.
func listen(ctx context.Context, pool *pgPool, h *streaming.Handler, log *slog.Logger) {
	last := ""
	for ctx.Err() == nil {
		err := listenOnce(ctx, pool, h)
		if ctx.Err() != nil {
			return
		}
		level := slog.LevelWarn
		if err.Error() == last { // the same failure again: once is enough at warn
			level = slog.LevelDebug
		}
		last = err.Error()
		log.Log(ctx, level, "Postgres LISTEN failed, retrying every 2 s", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func listenOnce(ctx context.Context, pool *pgPool, h *streaming.Handler) error {
	pc, err := pool.acquire(ctx)
	if err != nil {
		return err
	}
	// A connection that LISTENed is not given back to the pool.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		go func(account string) {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_ = h.Reload(rctx, account)
		}(n.Payload)
	}
}
