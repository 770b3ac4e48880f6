package proxytest_test

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/cometkit/cometkit/internal/proxytest"
	"github.com/cometkit/cometkit/internal/testredis"
)

// The documented configurations, which the tests run as they are but for
// their addresses and paths.
const (
	nginxConf   = "../../docs/proxy/nginx.conf"
	haproxyConf = "../../docs/proxy/haproxy.cfg"
)

// The upstream addresses the configurations name, which the tests replace
// with their nodes'.
const (
	confNodeA = "10.0.0.11:8080"
	confNodeB = "10.0.0.12:8080"
)

// A site is the chat behind one of the documented proxies: HTTPS (and
// HTTP/2) on url, plain HTTP, which redirects, on plain.
type site struct {
	t     *testing.T
	url   string
	plain string
	cert  proxytest.Certificate
	proxy *proxytest.Proxy
}

// A proxyKind starts a documented configuration in front of two upstream
// addresses, with edits (more old, new pairs) for tests that show what a
// line of it is for.
type proxyKind struct {
	name  string
	start func(t *testing.T, a, b string, edits ...string) *site
}

var proxyKinds = []proxyKind{{"nginx", startNginx}, {"haproxy", startHAProxy}}

// with returns p with more edits to its configuration.
func (p proxyKind) with(edits ...string) proxyKind {
	return proxyKind{p.name, func(t *testing.T, a, b string, more ...string) *site {
		return p.start(t, a, b, append(more, edits...)...)
	}}
}

// eachProxy runs f as a subtest for each documented proxy.
func eachProxy(t *testing.T, f func(t *testing.T, p proxyKind)) {
	for _, p := range proxyKinds {
		t.Run(p.name, func(t *testing.T) { f(t, p) })
	}
}

// startChat runs two chat nodes sharing a Redis behind the proxy, as the
// configurations expect, with extra flags for both nodes.
func startChat(t *testing.T, p proxyKind, args ...string) (*site, *node, *node) {
	t.Helper()
	redis := testredis.Start(t)
	args = append([]string{"-redis", "redis://" + redis.Addr + "/0"}, args...)
	a, b := startNode(t, args...), startNode(t, args...)
	return p.start(t, a.addr, b.addr), a, b
}

func startNginx(t *testing.T, a, b string, edits ...string) *site {
	return startSite(t, "nginx", nginxConf, proxytest.StartNginx, func(s *site, https, plain string) []string {
		return []string{
			"listen 80;", "listen " + plain + ";",
			"listen 443 ", "listen " + https + " ",
			confNodeA, a,
			confNodeB, b,
			"/etc/nginx/tls/chat.crt", s.cert.CertFile,
			"/etc/nginx/tls/chat.key", s.cert.KeyFile,
			"/run/nginx.pid", "nginx.pid", // relative: in a temporary directory
			"/var/log/nginx/error.log", "stderr",
			"/var/log/nginx/access.log", "access.log",
		}
	}, edits)
}

func startHAProxy(t *testing.T, a, b string, edits ...string) *site {
	return startSite(t, "haproxy", haproxyConf, proxytest.StartHAProxy, func(s *site, https, plain string) []string {
		return []string{
			"bind :80\n", "bind " + plain + "\n",
			"bind :443 ", "bind " + https + " ",
			confNodeA, a,
			confNodeB, b,
			"/etc/haproxy/chat.pem", s.cert.Combined,
		}
	}, edits)
}

// startSite runs the configuration in file with run, on two free
// addresses for HTTPS and plain HTTP, with the replacements that place
// it on this machine, then the edits.
func startSite(t *testing.T, name, file string, run func(testing.TB, string, ...string) *proxytest.Proxy,
	place func(s *site, https, plain string) []string, edits []string) *site {
	t.Helper()
	s := &site{t: t, cert: proxytest.NewCertificate(t)}
	https, plain := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	conf := proxytest.Config(t, file, append(place(s, https, plain), edits...)...)
	s.proxy = run(t, conf, https, plain)
	s.url, s.plain = "https://"+https, "http://"+plain
	s.logOnFailure(name)
	return s
}

// logOnFailure logs the end of what the proxy wrote (nginx its errors,
// haproxy its log) if the test fails.
func (s *site) logOnFailure(name string) {
	s.t.Cleanup(func() {
		if !s.t.Failed() {
			return
		}
		out := s.proxy.Output()
		if len(out) > 4000 {
			out = "…" + out[len(out)-4000:]
		}
		s.t.Logf("%s wrote:\n%s", name, out)
	})
}

// httpClient returns a client of the site with its own cookie jar, that
// connects from the loopback address from ("" for any), over HTTP/2 when
// h2 is set and HTTP/1.1 otherwise, and does not follow redirects.
func (s *site) httpClient(from string, h2 bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(!h2)
	protocols.SetHTTP2(h2)
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: s.cert.Pool},
		Protocols:           protocols,
		MaxIdleConnsPerHost: 16,
	}
	s.t.Cleanup(tr.CloseIdleConnections)
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Transport:     tr,
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// client makes a client of the site, over HTTP/2 when h2 is set and
// HTTP/1.1 otherwise, from the loopback address from ("" for any).
func (s *site) client(from string, h2 bool) *client {
	return &client{t: s.t, base: s.url, hc: s.httpClient(from, h2)}
}
