package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The chat process under SIGTERM with 10,000 long-polls waiting: every one
// is answered, and the process exits 0 within its drain timeout. The server
// is a separate process (built here), so each side holds 10,000 sockets,
// under the 20,000 open files a process may have.
func TestSIGTERMAnswersEveryWaitingClient(t *testing.T) {
	const clients = 10_000
	bin := filepath.Join(t.TempDir(), "chat")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())

	addr := freeLoopbackAddr(t)
	cmd := exec.Command(bin, "-addr", addr, "-timeout", "5m", "-drain", "20s", "-queue", fmt.Sprint(clients))
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	waitUntilServing(t, "http://"+addr+"/healthz")

	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var answered, failed atomic.Int32
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			resp, err := client.Get(fmt.Sprintf("http://%s/rooms/r%d/subscribe?since=0", addr, i%100))
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode == http.StatusOK {
				answered.Add(1)
			} else {
				failed.Add(1)
			}
		})
	}
	// Wait until the server holds every poll (its gauge says so).
	require.Eventually(t, func() bool { return metric(t, addr, "cometkit_continuations_suspended") == clients },
		time.Minute, 50*time.Millisecond, "polls waiting: %v", metric(t, addr, "cometkit_continuations_suspended"))

	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	wg.Wait()
	err := <-exited
	exited <- err // for the cleanup
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		t.Fatalf("the server exited with %v", exitErr)
	}
	require.NoError(t, err)
	assert.Equal(t, int32(clients), answered.Load(), "answered 200")
	assert.Zero(t, failed.Load())
	t.Logf("%d waiting clients answered and the process exited 0, %v after SIGTERM", clients, time.Since(start).Round(time.Millisecond))
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func waitUntilServing(t *testing.T, url string) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "the server did not come up")
	http.DefaultClient.CloseIdleConnections()
}

// metric reads one unlabelled value from the server's /metrics.
func metric(t *testing.T, addr, name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	defer http.DefaultClient.CloseIdleConnections()
	var v float64
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if n, _ := fmt.Sscanf(line, name+" %g", &v); n == 1 {
			return v
		}
	}
	return -1
}
