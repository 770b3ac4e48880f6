// Package testredis runs a real redis-server for a test: its own process
// on a free loopback port, with its data in the test's temporary
// directory, persisted on every write (appendonly, fsync always) so that a
// restart keeps it, as in production. Tests that need Redis fail, rather
// than skip, when redis-server is not installed: ./test installs it.
//
// Extra arguments to Start override those defaults, so a test can run the
// other ways Redis is operated and lose data the ways they lose it:
// snapshots only ("--appendonly", "no", then SAVE, writes, Kill, Restart:
// the restart loads the older snapshot), fsync once a second
// ("--appendfsync", "everysec", with TruncateAOF standing in for the
// unsynced tail an OS crash loses), or a one-node Redis Cluster
// (StartCluster).
package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// StartCluster starts a redis-server in cluster mode that serves every
// hash slot by itself: a Redis Cluster of one node, on which a command
// whose keys fall in different slots fails with CROSSSLOT as on a real
// cluster.
func StartCluster(t testing.TB, args ...string) *Server {
	t.Helper()
	s := Start(t, append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}, args...)...)
	if _, err := s.Do("CLUSTER", "ADDSLOTSRANGE", "0", "16383"); err != nil {
		t.Fatalf("testredis: assigning the slots: %v", err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, err := s.Do("CLUSTER", "INFO")
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: the cluster on %s is not ready: %q, %v", s.Addr, info, err)
		}
	}
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
		if _, err := s.Do("PING"); err == nil {
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

// AOFSize returns the size of the append-only file that takes the
// server's writes now, once the server has written what it holds in its
// AOF buffer: with appendfsync everysec it may answer a command before it
// writes it, while an fsync is under way.
func (s *Server) AOFSize() int64 {
	s.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		info, err := s.Do("INFO", "persistence")
		if err == nil && strings.Contains(info, "aof_buffer_length:0\r\n") {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testredis: the AOF buffer of %s is not written: %q, %v", s.Addr, info, err)
		}
	}
	fi, err := os.Stat(s.aofFile())
	if err != nil {
		s.t.Fatalf("testredis: %v", err)
	}
	return fi.Size()
}

// TruncateAOF cuts the append-only file back to size, as an OS crash
// loses what Redis wrote but had not yet fsynced (appendfsync everysec).
// The server must be stopped; on Restart it loads what is left.
func (s *Server) TruncateAOF(size int64) {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("testredis: TruncateAOF on a running server")
	}
	if err := os.Truncate(s.aofFile(), size); err != nil {
		s.t.Fatalf("testredis: %v", err)
	}
}

// aofFile is the one incremental file of Redis 7's multi-part AOF.
func (s *Server) aofFile() string {
	s.t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.dir, "appendonlydir", "*.incr.aof"))
	if len(files) != 1 {
		s.t.Fatalf("testredis: want one incremental AOF in %s, have %v", s.dir, files)
	}
	return files[0]
}

// Do sends one command over the Redis protocol and returns its reply as
// text (a simple string, an integer or a bulk string), without a client
// library: the tests' own clients are what is under test.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(req.String())); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("testredis: empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("testredis: reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("testredis: unexpected reply %q", line)
}
