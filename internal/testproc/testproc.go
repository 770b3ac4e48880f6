// Package testproc runs one of the project's programs as its own process
// for a test: built from its package, listening on a free loopback port,
// and killed when the test ends. Tests that need a server in another
// process (so that each side has its own open-file limit, or to send it a
// signal) use it, and its clients that misbehave on purpose
// (HangsUpOnSlowHeaders, DialNonReader).
package testproc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A Server is a running program.
type Server struct {
	Addr string    // host:port it listens on
	Cmd  *exec.Cmd // the process, for signals and its pid
	done chan struct{}
	err  error
}

// Start builds the program in pkg (a directory, as for go build), runs it
// with -addr set to a free loopback address and the other args, and waits
// until it accepts connections. The process is killed at the end of t.
func Start(t testing.TB, pkg string, args ...string) *Server {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "server")
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("testproc: build %s: %v", pkg, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testproc: %v", err)
	}
	addr := l.Addr().String()
	l.Close()

	s := &Server{Addr: addr, Cmd: exec.Command(bin, append([]string{"-addr", addr}, args...)...), done: make(chan struct{})}
	if err := s.Cmd.Start(); err != nil {
		t.Fatalf("testproc: start %s: %v", bin, err)
	}
	go func() {
		s.err = s.Cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Cmd.Process.Kill()
		<-s.done
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("testproc: %s did not start listening on %s", pkg, addr)
		}
		select {
		case <-s.done:
			t.Fatalf("testproc: %s exited: %v", pkg, s.err)
		default:
		}
	}
}

// Wait waits for the process to exit and returns how it did.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// HangsUpOnSlowHeaders opens a connection to addr, sends a request line
// and one header but never the blank line that ends the headers (a
// slowloris client), and reports whether the server hung up within
// within: it should, after its ReadHeaderTimeout, rather than keep the
// connection.
func HangsUpOnSlowHeaders(addr string, within time.Duration) (bool, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		return false, err
	}
	conn.SetReadDeadline(time.Now().Add(within))
	_, err = io.Copy(io.Discard, conn) // until the server hangs up, or the deadline
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return false, nil
	}
	return true, nil
}

// DialNonReader opens a connection to addr for a client that never reads
// what the server sends: its receive buffer is as small as the kernel
// allows, so that a large answer stays stuck in the server's write, as it
// would for a client that stopped reading, or does so on purpose.
func DialNonReader(addr string) (net.Conn, error) {
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	return dialer.Dial("tcp", addr)
}

// A Buffer is what a process (or any other goroutine) writes while a test
// reads it: its output, a log.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
