// Package proxytest runs the reverse proxies that the documentation
// configures, nginx and haproxy, for tests: each its own process on
// loopback, started from a configuration in docs/proxy/ with only its
// addresses and paths replaced, and stopped when the test ends. The tests
// in this package run those configurations in front of the chat example.
//
// Tests fail, rather than skip, when nginx or haproxy is not installed:
// ./test installs Debian's packages.
//
//	conf := proxytest.Config(t, "../../docs/proxy/nginx.conf",
//		"listen 443 ", "listen "+addr+" ", // and the other ports and paths
//		"/var/log/nginx/error.log", "stderr")
//	proxytest.StartNginx(t, conf, addr)
package proxytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cometkit/cometkit/internal/testproc"
)

// Config reads the configuration file at path and replaces, in order,
// each old string with its new one (pairs: old, new, old, new…): the
// addresses, ports and paths that differ on a test machine. Every old
// string must occur in the file, so that the file and the tests that run
// it cannot drift apart unnoticed.
func Config(t testing.TB, path string, oldnew ...string) string {
	t.Helper()
	if len(oldnew)%2 != 0 {
		t.Fatalf("proxytest: Config(%s): replacements come in pairs", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	conf := string(b)
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(conf, oldnew[i]) {
			t.Fatalf("proxytest: %s has no %q to replace", path, oldnew[i])
		}
		conf = strings.ReplaceAll(conf, oldnew[i], oldnew[i+1])
	}
	return conf
}

// FreeAddr returns a loopback address with a port nobody listens on now.
// The port is below the kernel's range of ephemeral ports, which the
// outgoing connections of every process on the machine take theirs from:
// on a busy machine one of them would otherwise take the port before the
// test listens on it, or while a server the test restarts is down.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(low-10000)))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatalf("proxytest: no free port between 10000 and %d", low)
	return ""
}

// ephemeralLow is where Linux's range of ephemeral ports begins (32768
// where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	low, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil || low <= 11000 {
		return 32768
	}
	return low
}

// A Proxy is a running nginx or haproxy.
type Proxy struct {
	name   string
	cmd    *exec.Cmd
	output *testproc.Buffer // what it wrote to stdout and stderr
	done   chan struct{}
	err    error
}

// StartNginx checks conf with nginx -t, then runs nginx in the foreground
// with it, and waits until it accepts connections on every address in
// listen. A conf's relative paths are relative to a temporary directory.
// nginx is stopped at the end of t.
func StartNginx(t testing.TB, conf string, listen ...string) *Proxy {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "nginx.conf")
	writeFile(t, file, conf)
	check := exec.Command("nginx", "-t", "-q", "-p", dir, "-c", file)
	return start(t, "nginx", check, exec.Command("nginx", "-p", dir, "-c", file, "-g", "daemon off;"), listen)
}

// StartHAProxy checks conf with haproxy -c, then runs haproxy in the
// foreground with it, and waits until it accepts connections on every
// address in listen. haproxy is stopped at the end of t.
func StartHAProxy(t testing.TB, conf string, listen ...string) *Proxy {
	t.Helper()
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	writeFile(t, file, conf)
	check := exec.Command("haproxy", "-c", "-q", "-f", file)
	return start(t, "haproxy", check, exec.Command("haproxy", "-db", "-f", file), listen)
}

func start(t testing.TB, name string, check, run *exec.Cmd, listen []string) *Proxy {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("proxytest: %s is not installed (./test installs Debian's %s)", name, name)
	}
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("proxytest: %s refuses the configuration: %v\n%s", name, err, out)
	}
	p := &Proxy{name: name, cmd: run, output: new(testproc.Buffer), done: make(chan struct{})}
	run.Stdout, run.Stderr = p.output, p.output
	// Its own process group, so that Stop reaches the workers too: a
	// master that dies leaves nginx's workers serving. And stopped if the
	// test binary dies without cleaning up (a panic, a timeout).
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := run.Start(); err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	go func() {
		p.err = run.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Stop)
	for _, addr := range listen {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				t.Fatalf("proxytest: %s exited at start (%v):\n%s", name, p.err, p.Output())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("proxytest: %s does not listen on %s:\n%s", name, addr, p.Output())
			}
		}
	}
	return p
}

// Stop stops the proxy at once (SIGTERM, which both take as "stop now"),
// and kills what is left of it after five seconds. Stopping a stopped
// proxy does nothing.
func (p *Proxy) Stop() {
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// Output returns what the proxy has written to its standard output and
// error so far (with a configuration that logs there).
func (p *Proxy) Output() string { return p.output.String() }

// A Certificate is a self-signed certificate for 127.0.0.1 and localhost,
// in files a proxy can read, and the pool a client trusts it with.
type Certificate struct {
	CertFile string // the certificate, PEM
	KeyFile  string // its private key, PEM
	Combined string // both in one file, as haproxy's crt wants them
	Pool     *x509.CertPool
}

// NewCertificate makes a self-signed certificate valid for an hour, in
// the test's temporary directory.
func NewCertificate(t testing.TB) Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // it signs itself
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	dir := t.TempDir()
	c := Certificate{
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
		Combined: filepath.Join(dir, "combined.pem"),
		Pool:     x509.NewCertPool(),
	}
	writeFile(t, c.CertFile, string(certPEM))
	writeFile(t, c.KeyFile, string(keyPEM))
	writeFile(t, c.Combined, string(certPEM)+string(keyPEM))
	c.Pool.AppendCertsFromPEM(certPEM)
	return c
}

func writeFile(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatalf("proxytest: %v", err)
	}
}
