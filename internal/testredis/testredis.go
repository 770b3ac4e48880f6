// Package testredis runs a real redis-server for a test: its own process
// on a free loopback port, with its data in the test's temporary
// directory, persisted on every write (appendonly, fsync always) so that a
// restart keeps it, as in production. Tests that need Redis fail, rather
// than skip, when redis-server is not installed: ./test installs it.
package testredis

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A Server is a redis-server process that can be stopped and started
// again on the same port with the same data.
type Server struct {
	Addr string
	args []string
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server; it is killed at the end of t. Extra
// arguments are redis-server options that override the defaults
// ("--appendfsync", "everysec" for a benchmark, say).
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("testredis: redis-server is not installed (./test installs Debian's redis-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Addr: addr, args: args, t: t, dir: t.TempDir()}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Kill stops the server at once (SIGKILL), as a crash would, and waits for
// it to exit. Killing a stopped server does nothing.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again (it must be stopped) and waits until it
// answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command("redis-server", append([]string{
		"--bind", "127.0.0.1", "--port", port, "--dir", s.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--protected-mode", "no", "--loglevel", "warning"}, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("testredis: %v", err)
	}
	s.done = make(chan struct{})
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ping(s.Addr) == nil {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("testredis: redis-server on %s exited at start", s.Addr)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testredis: redis-server on %s does not answer", s.Addr)
		}
	}
}

// ping sends PING over the Redis protocol and expects PONG, without a
// client library: the tests' own clients are what is under test.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprint(c, "PING\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}
