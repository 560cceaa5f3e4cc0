package streaming

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies decides which peers may tell the client's address in
// X-Forwarded-For, as Express's `trust proxy` setting (proxy-addr) that
// Mastodon sets from TRUSTED_PROXY_IP.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// The names proxy-addr accepts, and their ranges.
var namedProxies = map[string][]string{
	"loopback":    {"127.0.0.1/8", "::1/128"},
	"linklocal":   {"169.254.0.0/16", "fe80::/10"},
	"uniquelocal": {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"},
}

// ParseTrustedProxies reads TRUSTED_PROXY_IP: addresses, CIDR ranges and the
// names loopback, linklocal and uniquelocal, separated by commas or spaces.
// Empty means Mastodon's default, "loopback,uniquelocal".
func ParseTrustedProxies(spec string) (*TrustedProxies, error) {
	if strings.TrimSpace(spec) == "" {
		spec = "loopback,uniquelocal"
	}
	t := &TrustedProxies{}
	for _, entry := range strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if ranges, ok := namedProxies[entry]; ok {
			for _, r := range ranges {
				t.prefixes = append(t.prefixes, netip.MustParsePrefix(r))
			}
			continue
		}
		p, err := parseProxyEntry(entry)
		if err != nil {
			return nil, fmt.Errorf("Invalid TRUSTED_PROXY_IP environment variable: %q is not an address, a CIDR range or one of loopback, linklocal, uniquelocal", entry)
		}
		t.prefixes = append(t.prefixes, p)
	}
	return t, nil
}

func parseProxyEntry(entry string) (netip.Prefix, error) {
	if strings.Contains(entry, "/") {
		p, err := netip.ParsePrefix(entry)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(entry)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (t *TrustedProxies) trusts(a netip.Addr) bool {
	a = a.Unmap() // an IPv4 peer on a dual-stack socket
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the request's client address as Express's req.ip: starting
// from the peer, each trusted hop gives way to the address it forwarded for
// (X-Forwarded-For, read right to left), until an untrusted one. A peer on a
// UNIX socket is trusted (it is the local proxy), as Mastodon's SOCKET setup.
func (t *TrustedProxies) ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil && host != "" && host != "@" {
		return host
	}
	if err == nil && !t.trusts(peer) {
		return peer.Unmap().String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	client := host
	if err == nil {
		client = peer.Unmap().String()
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if hop == "" {
			continue
		}
		a, err := netip.ParseAddr(hop)
		if err != nil {
			return hop // not an address: nothing further can be trusted
		}
		client = a.Unmap().String()
		if !t.trusts(a) {
			break
		}
	}
	return client
}
