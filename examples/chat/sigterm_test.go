package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/internal/testproc"
)

// The chat process under SIGTERM with 10,000 long-polls waiting: every one
// is answered, and the process exits 0 within its drain timeout. The server
// is a separate process (built here), so each side holds 10,000 sockets,
// under the 20,000 open files a process may have.
func TestSIGTERMAnswersEveryWaitingClient(t *testing.T) {
	const clients = 10_000
	srv := testproc.Start(t, ".", "-timeout", "5m", "-drain", "20s", "-queue", fmt.Sprint(clients))
	addr := srv.Addr
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
	require.NoError(t, srv.Cmd.Process.Signal(syscall.SIGTERM))
	wg.Wait()
	require.NoError(t, srv.Wait(), "the server's exit")
	assert.Equal(t, int32(clients), answered.Load(), "answered 200")
	assert.Zero(t, failed.Load())
	t.Logf("%d waiting clients answered and the process exited 0, %v after SIGTERM", clients, time.Since(start).Round(time.Millisecond))
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

// A client that never finishes its headers is hung up on after
// -header-timeout, rather than holding a connection (slowloris).
func TestSlowHeadersOverTheWire(t *testing.T) {
	srv := testproc.Start(t, ".", "-header-timeout", "300ms")
	hungUp, err := testproc.HangsUpOnSlowHeaders(srv.Addr, 10*time.Second)
	require.NoError(t, err)
	assert.True(t, hungUp)
}
