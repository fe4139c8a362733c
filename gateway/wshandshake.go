package gateway

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/maple-farm/maple/internal/wsframe"
)

// The opening handshake of a WebSocket player (RFC 6455 section 4.2),
// read and answered on the event loop. The request is parsed in place:
// a player's connection leaves no garbage behind but its answer, where
// net/http's parser would leave a few KiB per connection for the collector
// (docs/benchmarks.md, "WebSocket players"). The checks are those of
// github.com/coder/websocket, which served players before.

// wsRequest is what the gateway reads of a request head; its slices alias
// the head's bytes.
type wsRequest struct {
	method, target []byte
	minor          int // HTTP/1.minor
	host, origin   []byte
	key, version   []byte
	hosts, keys    int  // how many Host and Sec-WebSocket-Key headers came
	connUpgrade    bool // Connection holds the token upgrade
	upgradeWS      bool // Upgrade holds the token websocket
}

// errHTTP is a request the gateway answers with an HTTP error.
type errHTTP struct {
	code int
	msg  string
	hdr  string // extra header lines, each ending in \r\n
}

func (e *errHTTP) Error() string { return fmt.Sprintf("websocket handshake: %d %s", e.code, e.msg) }

func httpError(code int, hdr, format string, args ...any) *errHTTP {
	return &errHTTP{code: code, msg: fmt.Sprintf(format, args...), hdr: hdr}
}

// headEnd returns the length of the request head at the start of b, its
// empty line included; 0 if b holds only part of it. Lines end in \r\n or
// \n, as net/http reads them.
func headEnd(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++ // empty lines before the request line are skipped
	}
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		line := b[i : i+j]
		i += j + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return i
		}
	}
}

// requestLine returns the method, target and protocol of the first line.
func requestLine(head []byte) (method, target, proto []byte, ok bool) {
	line := head
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		line = head[:i]
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || bytes.IndexByte(proto, ' ') >= 0 {
		return nil, nil, nil, false
	}
	return method, target, proto, true
}

// parseRequest reads a request head (headEnd's length of bytes).
func parseRequest(head []byte) (wsRequest, error) {
	var r wsRequest
	for len(head) > 0 && (head[0] == '\r' || head[0] == '\n') {
		head = head[1:] // empty lines before the request line
	}
	method, target, proto, ok := requestLine(head)
	if !ok {
		return r, httpError(http.StatusBadRequest, "", "malformed request line")
	}
	r.method, r.target = method, target
	major, minor, ok := http.ParseHTTPVersion(string(proto))
	if !ok || major != 1 {
		return r, httpError(http.StatusBadRequest, "", "malformed HTTP version %q", proto)
	}
	r.minor = minor
	rest := head[bytes.IndexByte(head, '\n')+1:]
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return r, httpError(http.StatusBadRequest, "", "malformed header")
		}
		line := bytes.TrimSuffix(rest[:i], []byte("\r"))
		rest = rest[i+1:]
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || !isToken(name) {
			return r, httpError(http.StatusBadRequest, "", "malformed header line")
		}
		value = bytes.Trim(value, " \t")
		switch {
		case asciiEqualFold(name, "Host"):
			r.host = value
			r.hosts++
		case asciiEqualFold(name, "Origin"):
			r.origin = value
		case asciiEqualFold(name, "Connection"):
			r.connUpgrade = r.connUpgrade || hasTokenFold(value, "upgrade")
		case asciiEqualFold(name, "Upgrade"):
			r.upgradeWS = r.upgradeWS || hasTokenFold(value, "websocket")
		case asciiEqualFold(name, "Sec-WebSocket-Version"):
			r.version = value
		case asciiEqualFold(name, "Sec-WebSocket-Key"):
			r.key = value
			r.keys++
		}
	}
	switch {
	case r.minor >= 1 && r.hosts == 0:
		return r, httpError(http.StatusBadRequest, "", "missing required Host header")
	case r.hosts > 1:
		return r, httpError(http.StatusBadRequest, "", "too many Host headers")
	}
	return r, nil
}

// urlPath returns the path of a request target ("/ws?x", or an absolute
// URL), decoded.
func urlPath(target []byte) (string, bool) {
	if len(target) > 0 && target[0] == '/' && bytes.IndexByte(target, '%') < 0 {
		p, _, _ := bytes.Cut(target, []byte("?"))
		return string(p), true
	}
	u, err := url.ParseRequestURI(string(target))
	if err != nil {
		return "", false
	}
	return u.Path, true
}

// isPath reports whether target's path is p, without allocating for
// the usual "/ws" or "/ws?query".
func isPath(target []byte, p string) bool {
	if len(target) > 0 && target[0] == '/' && bytes.IndexByte(target, '%') < 0 {
		t, _, _ := bytes.Cut(target, []byte("?"))
		return string(t) == p
	}
	got, ok := urlPath(target)
	return ok && got == p
}

// checkUpgrade checks a request for WSPath is a WebSocket handshake.
func checkUpgrade(r *wsRequest) error {
	const upgrade = "Upgrade: websocket\r\n"
	switch {
	case r.minor < 1:
		return httpError(http.StatusUpgradeRequired, upgrade, "HTTP/1.1 or later required, not HTTP/1.%d", r.minor)
	case !r.connUpgrade:
		return httpError(http.StatusUpgradeRequired, upgrade, "Connection header does not contain Upgrade")
	case !r.upgradeWS:
		return httpError(http.StatusUpgradeRequired, upgrade, "Upgrade header does not contain websocket")
	case string(r.method) != http.MethodGet:
		return httpError(http.StatusMethodNotAllowed, "", "method %q, not GET", r.method)
	case string(r.version) != "13":
		return httpError(http.StatusBadRequest, "Sec-WebSocket-Version: 13\r\n", "version %q, only 13 is supported", r.version)
	case r.keys != 1:
		return httpError(http.StatusBadRequest, "", "%d Sec-WebSocket-Key headers, want 1", r.keys)
	}
	var k [18]byte
	if n, err := base64.StdEncoding.Decode(k[:], r.key); err != nil || n != 16 || len(r.key) != 24 {
		return httpError(http.StatusBadRequest, "", "Sec-WebSocket-Key %q is not 16 bytes in base64", r.key)
	}
	return nil
}

// checkOrigin lets a page connect from its own host, from a host that
// matches one of patterns (path.Match, any case; a pattern with "://"
// matches scheme and host), or with no Origin at all (apps, bots).
func checkOrigin(r *wsRequest, patterns []string) error {
	if len(r.origin) == 0 {
		return nil
	}
	scheme, host, ok := bytes.Cut(r.origin, []byte("://"))
	if !ok {
		host, scheme = nil, nil // "null", or not a URL: only a pattern of "" matches
	}
	if i := bytes.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	if len(host) > 0 && bytes.EqualFold(host, r.host) {
		return nil
	}
	for _, p := range patterns {
		target := string(host)
		if strings.Contains(p, "://") {
			target = string(scheme) + "://" + string(host)
		}
		if ok, err := path.Match(strings.ToLower(p), strings.ToLower(target)); err == nil && ok {
			return nil
		}
	}
	return httpError(http.StatusForbidden, "", "Origin %q not allowed for host %q", r.origin, r.host)
}

// appendSwitching appends the answer that upgrades the connection.
func appendSwitching(dst, key []byte) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = wsframe.AppendAccept(dst, key)
	return append(dst, "\r\n\r\n"...)
}

// appendHTTPError appends the answer to a request refused.
func appendHTTPError(dst []byte, err error) []byte {
	var e *errHTTP
	if !errors.As(err, &e) {
		e = httpError(http.StatusBadRequest, "", "%v", err)
	}
	body := e.msg + "\n"
	return fmt.Appendf(dst, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n%sConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		e.code, http.StatusText(e.code), e.hdr, len(body), body)
}

// isToken reports whether b is an HTTP token (a header name).
func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7F || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// asciiEqualFold is bytes.EqualFold against a string, for ASCII.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hasTokenFold reports whether a comma-separated header value holds
// token, in any case.
func hasTokenFold(v []byte, token string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if asciiEqualFold(bytes.Trim(t, " \t"), token) {
			return true
		}
	}
	return false
}
