package servlet

import (
	"net/url"
	"strings"
	"testing"
)

// The cost of finding the canonical path, paid by every request a
// Container serves, for a path already canonical and one that is not.
func BenchmarkCanonicalPath(b *testing.B) {
	for _, target := range []string{"/rooms/lobby/messages/42", "/rooms//lobby/./x/../messages;v=1/%34%32"} {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(target, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := canonicalPath(u); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Whatever the client sends, a path canonicalPath accepts is canonical:
// it starts with "/", has no empty segment but the last and no dot
// segment, and is its own canonical path (unless a decoded ";" in it
// would read as a parameter the second time).
func FuzzCanonicalPath(f *testing.F) {
	for _, seed := range []string{"/", "//", "/a/./b/../c/", "/x/%2e%2e/admin", "/a;p=1/b;", "/%E2%82%AC", "/a%2Fb", "/..", "/a/b/.."} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http answers 400 itself
		}
		p, err := canonicalPath(u)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("%q: %q does not start with /", target, p)
		}
		segments := strings.Split(p[1:], "/")
		for i, s := range segments {
			if s == "." || s == ".." || s == "" && i < len(segments)-1 {
				t.Fatalf("%q: %q has segment %q", target, p, s)
			}
		}
		if strings.Contains(p, ";") {
			return
		}
		if again, err := canonicalPath(&url.URL{Path: p}); err != nil || again != p {
			t.Fatalf("%q: %q canonicalizes to %q, %v", target, p, again, err)
		}
	})
}
