package proxy

import (
	"math/rand/v2"
	"net/http"
	"net/netip"
	"path"
	"strings"
)

// clientAddr returns the peer's IP from r.RemoteAddr without allocating.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (g *Gateway) trusted(a netip.Addr) bool {
	for _, p := range g.trustedNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// realClient finds the client behind trusted proxies: the right-most
// X-Forwarded-For entry that is not itself a trusted proxy (nginx's
// real_ip_recursive). peer is trusted when this is called.
func (g *Gateway) realClient(xff string, peer netip.Addr) netip.Addr {
	client := peer
	for xff != "" {
		i := strings.LastIndexByte(xff, ',')
		hop := strings.TrimSpace(xff[i+1:])
		xff = xff[:max(i, 0)]
		a, err := netip.ParseAddr(hop)
		if err != nil {
			break // garbage from an untrusted hop: stop believing the chain
		}
		client = a.Unmap()
		if !g.trusted(client) {
			break
		}
		if i < 0 {
			break
		}
	}
	return client
}

// setForwarded writes the headers nginx's seed config set for the upstream
// (X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host) and drops
// what an untrusted client must not be able to claim. out is the outbound
// header, the client's X-Forwarded-* and Forwarded already removed.
func (g *Gateway) setForwarded(in *http.Request, out http.Header, st *reqState) {
	peer := st.peer
	peerS := peer.String()
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	if st.trustedPeer {
		client := peer
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			chain := strings.Join(prior, ", ")
			client = g.realClient(chain, peer)
			out.Set("X-Forwarded-For", chain+", "+peerS)
		} else {
			out.Set("X-Forwarded-For", peerS)
		}
		if p := in.Header.Get("X-Forwarded-Proto"); p != "" {
			proto = p
		}
		if h := in.Header.Get("X-Forwarded-Host"); h != "" {
			out.Set("X-Forwarded-Host", h)
		} else {
			out.Set("X-Forwarded-Host", in.Host)
		}
		out.Set("X-Real-Ip", client.String())
		if fwd := in.Header.Values("Forwarded"); len(fwd) > 0 {
			out["Forwarded"] = fwd // outHeader drops it; a trusted hop's is kept
		}
	} else {
		out.Set("X-Forwarded-For", peerS)
		out.Set("X-Forwarded-Host", in.Host)
		out.Set("X-Real-Ip", peerS)
		// Forwarded (RFC 7239) would let a client forge its address past us.
		out.Del("Forwarded")
	}
	// Flowise treats "x-request-from: internal" as a call from its own UI.
	// A trusted proxy may say so when the operator asked for it; any client
	// may when it also carries Flowise's session cookie (Flowise 3 then
	// checks the session instead of an API key: that is how its UI calls
	// the API). Anyone else's is dropped.
	if _, ok := out["X-Request-From"]; ok &&
		!(g.passRequestFrom && st.trustedPeer) && !(g.requestFromWithSession && hasSessionCookie(in)) {
		out.Del("X-Request-From")
	}
	out.Set("X-Forwarded-Proto", proto)
	out.Set("X-Request-Id", st.id)
}

type secHeader struct {
	key string
	// value is shared by every response: a slice with len == cap, so an
	// Add on one response copies rather than writes into it.
	value []string
}

// securityHeaders adds to dst the configured headers that src lacks.
func (g *Gateway) securityHeaders(src, dst http.Header) {
	for _, sh := range g.secHeaders {
		if _, ok := src[sh.key]; !ok {
			dst[sh.key] = sh.value
		}
	}
}

// isStatic reports whether the path names a static asset whose responses
// get the long-lived Cache-Control. Nothing under /api/ is an asset, whatever
// its extension: an API answer must never be cached for a year.
func (g *Gateway) isStatic(p string) bool {
	if g.staticCC == nil || len(p) >= 5 && strings.EqualFold(p[:5], "/api/") {
		return false
	}
	ext := path.Ext(p)
	if len(ext) < 2 {
		return false
	}
	_, ok := g.staticExt[strings.ToLower(ext[1:])]
	return ok
}

// cacheDirectives are the Cache-Control directives flowgate acts on.
type cacheDirectives struct{ noStore, noCache, private bool }

// cacheControl reads a message's Cache-Control directives by name (an
// argument, as in private="Set-Cookie", does not hide one), and Pragma's
// no-cache from HTTP/1.0 clients.
func cacheControl(h http.Header) (c cacheDirectives) {
	for _, v := range h["Cache-Control"] {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.TrimSpace(d)
			if i := strings.IndexAny(d, "= "); i >= 0 {
				d = d[:i]
			}
			switch {
			case strings.EqualFold(d, "no-store"):
				c.noStore = true
			case strings.EqualFold(d, "no-cache"):
				c.noCache = true
			case strings.EqualFold(d, "private"):
				c.private = true
			}
		}
	}
	if p := h.Get("Pragma"); strings.EqualFold(strings.TrimSpace(p), "no-cache") {
		c.noCache = true
	}
	return c
}

// forbidsSharedCaching reports whether the upstream's Cache-Control keeps a
// response out of shared caches (private, no-store): neither the asset
// Cache-Control nor the response cache may override that. Weaker
// directives (no-cache, max-age=0, as Express's static files send) are
// replaced, as nginx's seed config did.
func forbidsSharedCaching(h http.Header) bool {
	c := cacheControl(h)
	return c.private || c.noStore
}

const hexDigits = "0123456789abcdef"

// requestID keeps a well-formed client X-Request-ID (so ids join up across
// hops) or makes a 32-hex-digit one. Ids need to be unique, not secret.
func requestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); v != "" && len(v) <= 128 && idChars(v) {
		return v
	}
	var b [32]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 0; i < 16; i++ {
		b[i] = hexDigits[(hi>>(60-4*i))&0xf]
		b[16+i] = hexDigits[(lo>>(60-4*i))&0xf]
	}
	return string(b[:])
}

func idChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// hasSessionCookie reports whether r carries a non-empty Flowise session
// cookie ("token", the JWT Flowise 3's UI logs in with).
func hasSessionCookie(r *http.Request) bool {
	c, err := r.Cookie("token")
	return err == nil && c.Value != ""
}
