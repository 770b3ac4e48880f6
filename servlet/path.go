package servlet

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Why canonicalPath refuses a path; each is answered 400.
var (
	errRelativePath   = errors.New("path does not start with /")
	errEscapesRoot    = errors.New(`path goes above the root with ".."`)
	errEncodedSlash   = errors.New(`path has an encoded "/"`)
	errBackslash      = errors.New(`path has a "\"`)
	errControl        = errors.New("path has a control character")
	errFragment       = errors.New(`path has a "#"`)
	errBadEscape      = errors.New("path has a malformed %-escape")
	errNotUTF8        = errors.New("path is not UTF-8")
	errEncodedDot     = errors.New(`path has an encoded "." or ".." segment`)
	errDotParameter   = errors.New(`path has a "." or ".." segment with a parameter`)
	errEmptyParameter = errors.New("path has an empty segment with a parameter")
)

// canonicalPath returns u's path in the canonical form the Servlet
// specification (6.0, section 3.5.2) maps requests by: path parameters
// (";name=value") removed from each segment, each segment percent-decoded,
// empty segments other than the last removed, and "." and ".." segments
// resolved. It refuses, with the reason, what the specification calls
// suspicious: a path that does not start with "/" or that ".." takes
// above the root; an encoded "/"; a "\" or a control character, encoded
// or not; a "#"; a malformed escape or invalid UTF-8; a "." or ".."
// segment that is encoded or has a parameter; and an empty segment with a
// parameter, other than the last.
func canonicalPath(u *url.URL) (string, error) {
	raw := escapedPath(u)
	if raw == "" {
		return "/", nil // an absolute-form target without a path
	}
	if raw[0] != '/' {
		return "", errRelativePath
	}
	if isCanonical(raw) {
		return raw, nil
	}
	segments := strings.Split(raw[1:], "/")
	path := make([]string, 0, len(segments))
	for i, seg := range segments {
		if err := checkSegment(seg); err != nil {
			return "", err
		}
		name, _, hasParam := strings.Cut(seg, ";")
		decoded, _ := url.PathUnescape(name) // checkSegment unescaped all of seg
		last := i == len(segments)-1
		switch {
		case (decoded == "." || decoded == "..") && hasParam:
			return "", errDotParameter
		case (decoded == "." || decoded == "..") && decoded != name:
			return "", errEncodedDot
		case decoded == "" && hasParam && !last:
			return "", errEmptyParameter
		case decoded == "" && !last, decoded == ".":
			// dropped
		case decoded == "..":
			if len(path) == 0 {
				return "", errEscapesRoot
			}
			path = path[:len(path)-1]
		default:
			path = append(path, decoded)
		}
	}
	return "/" + strings.Join(path, "/"), nil
}

// isCanonical reports whether raw, which starts with "/", is canonical as
// it is, the case of nearly every request: nothing to decode, no
// parameter, no empty or dot segment, nothing to refuse. It may say no to
// a canonical path ("/.well-known"); canonicalPath then does the work.
func isCanonical(raw string) bool {
	if strings.Contains(raw, "//") || strings.Contains(raw, "/.") {
		return false
	}
	for i := range len(raw) {
		switch c := raw[i]; {
		case c < 0x20, c >= 0x7f, c == '%', c == ';', c == '\\', c == '#':
			return false
		}
	}
	return true
}

// checkSegment refuses a raw path segment, parameters included, with a
// character that has no place in a path or that the segment's decoding
// would make ambiguous.
func checkSegment(seg string) error {
	if strings.Contains(seg, "#") {
		return errFragment
	}
	decoded, err := url.PathUnescape(seg)
	switch {
	case err != nil:
		return errBadEscape
	case strings.Contains(decoded, "/"):
		return errEncodedSlash
	case strings.Contains(decoded, `\`):
		return errBackslash
	case strings.ContainsFunc(decoded, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errControl
	case !utf8.ValidString(decoded):
		return errNotUTF8
	}
	return nil
}

// escapedPath returns u's path as the client sent it, escapes and all:
// RawPath when it is an encoding of Path (net/http sets it from the
// request line when it differs from Path's default encoding), else Path's
// default encoding. u.EscapedPath does the same but re-encodes Path, losing
// an encoded "/", whenever RawPath holds a character it would have escaped
// itself.
func escapedPath(u *url.URL) string {
	if u.RawPath != "" {
		if p, err := url.PathUnescape(u.RawPath); err == nil && p == u.Path {
			return u.RawPath
		}
	}
	return u.EscapedPath()
}

// withPath returns a shallow copy of r whose URL has path p.
func withPath(r *http.Request, p string) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	r2.URL = new(url.URL)
	*r2.URL = *r.URL
	r2.URL.Path = p
	r2.URL.RawPath = ""
	return r2
}
