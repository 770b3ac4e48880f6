package servlet_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/servlet"
)

// startOnLoopback starts c and serves it on a loopback port until the test
// ends; it returns the address.
func startOnLoopback(t *testing.T, c *servlet.Container) string {
	t.Helper()
	require.NoError(t, c.Start())
	srv := httptest.NewServer(c)
	t.Cleanup(func() {
		srv.Close()
		c.Shutdown(context.Background())
	})
	return srv.Listener.Addr().String()
}

// rawGet sends target as it is, on a connection of its own, so that no
// client cleans the path first, and returns the status and body.
func rawGet(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", target)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, target)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// forbidden is the servlet that guards /admin/*.
type forbidden struct{}

func (forbidden) DoGet(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "admins only", http.StatusForbidden)
}

// With /admin/* mapped to a servlet that answers 403 and the default
// servlet a file server whose root holds admin/secret.txt, no spelling of
// the path reaches the secret through the default servlet: each is mapped
// by its canonical path, or refused with 400.
func TestPathTricksDoNotBypassMapping(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "admin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "admin", "secret.txt"), []byte("the secret"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "public.txt"), []byte("public"), 0o644))

	c := servlet.NewContainer()
	c.Handle("/admin/*", forbidden{})
	c.Handle("/", http.FileServer(http.Dir(root)))
	addr := startOnLoopback(t, c)

	for target, want := range map[string]int{
		"/admin/secret.txt":                 http.StatusForbidden,
		"/x/../admin/secret.txt":            http.StatusForbidden,
		"//admin/secret.txt":                http.StatusForbidden,
		"/./admin/secret.txt":               http.StatusForbidden,
		"/x/./../admin/secret.txt":          http.StatusForbidden,
		"/x//../admin/secret.txt":           http.StatusForbidden,
		"/%61dmin/secret.txt":               http.StatusForbidden, // an escaped unreserved character
		"/admin;jsessionid=1/secret.txt":    http.StatusForbidden, // a path parameter
		"/public.txt/../admin/secret.txt":   http.StatusForbidden,
		"http://test/x/../admin/secret.txt": http.StatusForbidden, // absolute-form
		"/x/%2e%2e/admin/secret.txt":        http.StatusBadRequest,
		"/x/%2E%2E/admin/secret.txt":        http.StatusBadRequest,
		"/x/.%2e/admin/secret.txt":          http.StatusBadRequest,
		"/%2e/admin/secret.txt":             http.StatusBadRequest,
		"/x/..;/admin/secret.txt":           http.StatusBadRequest,
		"/.;/admin/secret.txt":              http.StatusBadRequest,
		"/admin%2fsecret.txt":               http.StatusBadRequest,
		"/x/..%2Fadmin/secret.txt":          http.StatusBadRequest,
		`/x/..\admin/secret.txt`:            http.StatusBadRequest,
		"/x/..%5Cadmin/secret.txt":          http.StatusBadRequest,
		"/admin%00/secret.txt":              http.StatusBadRequest,
		"/admin/secret.txt%00":              http.StatusBadRequest,
		"/../admin/secret.txt":              http.StatusBadRequest,
		"/x/../../admin/secret.txt":         http.StatusBadRequest,
		"/x/%252e%252e/admin/secret.txt":    http.StatusNotFound, // decoded once: a directory named %2e%2e
		"/public.txt":                       http.StatusOK,
		"/admin/../public.txt":              http.StatusOK,
	} {
		code, body := rawGet(t, addr, target)
		assert.Equal(t, want, code, target)
		assert.NotContains(t, body, "the secret", target)
	}
}

// Servlets, filters and the mapping see the same canonical path in
// r.URL.Path; the cases are the Servlet specification's examples
// (6.0, section 3.5.2).
func TestCanonicalPath(t *testing.T) {
	seen := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }
	c := servlet.NewContainer()
	c.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Filter-Saw", r.URL.Path)
			next.ServeHTTP(w, r)
		})
	})
	c.Handle("/", http.HandlerFunc(seen))
	addr := startOnLoopback(t, c)

	for target, want := range map[string]string{
		"/":                         "/",
		"//":                        "/",
		"/foo/bar":                  "/foo/bar",
		"/foo/bar;jsessionid=1234":  "/foo/bar",
		"/foo/bar/":                 "/foo/bar/",
		"/foo/bar/;jsessionid=1234": "/foo/bar/",
		"/foo;/bar;":                "/foo/bar",
		"/foo;/bar;/;":              "/foo/bar/",
		"/foo/b%25r":                "/foo/b%r",
		"/foo/./bar":                "/foo/bar",
		"/foo/././bar":              "/foo/bar",
		"/./foo/bar":                "/foo/bar",
		"/foo/bar/.":                "/foo/bar",
		"/foo/bar/./":               "/foo/bar/",
		"/foo/bar/./;":              "/foo/bar/",
		"/foo/.bar":                 "/foo/.bar",
		"/foo/../bar":               "/bar",
		"/foo/./../bar":             "/bar",
		"/foo/bar/..":               "/foo",
		"/foo/bar/../":              "/foo/",
		"/foo/bar/../;":             "/foo/",
		"/foo/..bar":                "/foo/..bar",
		"/foo/.../bar":              "/foo/.../bar",
		"/foo//bar":                 "/foo/bar",
		"//foo//bar//":              "/foo/bar/",
		"/foo//../bar":              "/bar",
		"/foo%E2%82%ACbar":          "/foo€bar",
		"/foo%20bar":                "/foo bar",
		"/foo/bar?q":                "/foo/bar",
		"/foo%3Bbar":                "/foo;bar", // an escaped ";" is no parameter
	} {
		code, body := rawGet(t, addr, target)
		if assert.Equal(t, http.StatusOK, code, target) {
			assert.Equal(t, want, body, target)
		}
	}

	for _, target := range []string{
		"/foo%00/bar/", "/foo%7Fbar", // control characters
		"/foo%2Fbar", "/foo%2Fb%25r", "/foo;%2F/bar", "/foo/.%2Fbar", "/foo/..%2Fbar", // an encoded "/"
		`/foo\bar`, "/foo%5Cbar", "/foo/.%5Cbar", "/foo/..%5Cbar", // "\"
		"/foo/%2e/bar", "/foo/%2e;/bar", "/foo/%2e%2E/bar", "/foo/%2e%2E;/bar", // encoded dot segments
		"/foo/.;/bar", "/foo/bar/.;", "/foo/..;/bar", "/foo/bar/..;", // dot segments with parameters
		"/;/foo;/;/bar/;/;", "/foo/;/../bar", // empty segments with parameters
		"/foo/../../bar", "/../foo/bar", "/foo/%2e%2e/%2E%2E/bar", // above the root
		"/foo%E2%82", "/foo%E2%82bar", // not UTF-8
		"/foo%XX/bar", "/foo%/bar", "/foo/bar%0", // malformed escapes (net/http refuses them itself)
		"/foo/bar#f",   // a fragment
		"foo/bar", "*", // not a path
	} {
		code, body := rawGet(t, addr, target)
		assert.Equal(t, http.StatusBadRequest, code, "%s: %s", target, body)
	}
}
