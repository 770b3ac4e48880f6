package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/internal/testproc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8080", "http://127.0.0.9:1", "http://localhost:80", "http://[::1]:8080", "https://127.0.0.1:8443"} {
		assert.NoError(t, checkLoopback(ok), ok)
	}
	for _, bad := range []string{"http://10.0.0.1:8080", "http://192.168.1.2", "http://example.com", "http://8.8.8.8", "ftp://127.0.0.1", "not a url", ""} {
		assert.Error(t, checkLoopback(bad), bad)
	}
}

func TestConfigErrors(t *testing.T) {
	ok := config{Target: "http://127.0.0.1:1", Subscribers: 1, Mode: modeSince, Rate: 1, Burst: 1, Duration: time.Second}
	require.NoError(t, ok.validate())
	for name, change := range map[string]func(*config){
		"no subscribers":  func(c *config) { c.Subscribers = 0 },
		"unknown mode":    func(c *config) { c.Mode = "websocket" },
		"no rate":         func(c *config) { c.Rate = 0 },
		"no burst":        func(c *config) { c.Burst = 0 },
		"remote target":   func(c *config) { c.Target = "http://10.1.2.3:8080" },
		"sigquit, no pid": func(c *config) { c.QuitServer = true },
	} {
		cfg := ok
		change(&cfg)
		_, err := run(context.Background(), cfg, nil)
		assert.Error(t, err, name)
	}
}

// quick is a short run; tests change what they look at.
func quick(target string, pid int) config {
	return config{
		Target: target, Subscribers: 40, Mode: modeSince, SourceIPs: 4, Streams: 15, ServerPID: pid,
		Rate: 40, Burst: 1, Duration: 500 * time.Millisecond,
		Settle: 50 * time.Millisecond, Warmup: 10 * time.Second, Grace: 10 * time.Second,
	}
}

// assertAllDelivered checks a run in which every subscriber must get every
// message once, with the figures filled in.
func assertAllDelivered(t *testing.T, res result, transport string) {
	t.Helper()
	assert.Equal(t, transport, res.Transport)
	assert.Equal(t, res.Subscribers, res.Waiting, "every subscriber waiting before the first publish")
	assert.Positive(t, res.Published)
	assert.Equal(t, res.Expected, res.Delivered)
	assert.Equal(t, 1.0, res.DeliveredFraction)
	assert.Zero(t, res.Duplicates)
	assert.Empty(t, res.Errors)
	assert.Positive(t, res.LatencyP99Ms)
	assert.GreaterOrEqual(t, res.LatencyP99Ms, res.LatencyP50Ms)
	assert.GreaterOrEqual(t, res.FanoutP99Ms, res.FanoutP50Ms)
	if assert.NotNil(t, res.Server) {
		assert.Positive(t, res.Server.IdleRSSBytes)
		assert.Greater(t, res.Server.LoadedRSSBytes, res.Server.IdleRSSBytes/2)
		assert.Greater(t, res.Server.AfterRSSBytes, res.Server.IdleRSSBytes/2)
		// /proc counts CPU in 10 ms ticks: a run this short may read
		// none (TestCPUSeconds checks the reading), never less.
		assert.GreaterOrEqual(t, res.Server.CPUSeconds, 0.0)
	}
}

// A modeCase is one run against a server: a mode over a transport, in
// bursts, or in lockstep rounds when rounds > 0.
type modeCase struct {
	name, mode, transport string
	h2c                   bool
	burst, rounds         int
}

// runModes runs each case against srv: every message reaches every
// subscriber once, a run of rounds publishes one message a round, and a
// run in bursts publishes whole bursts.
func runModes(t *testing.T, srv *testproc.Server, cases []modeCase) {
	target, pid := "http://"+srv.Addr, srv.Cmd.Process.Pid
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			cfg := quick(target, pid)
			cfg.Mode, cfg.H2C, cfg.Burst, cfg.Rounds = tt.mode, tt.h2c, tt.burst, tt.rounds
			res, err := run(t.Context(), cfg, nil)
			require.NoError(t, err)
			assertAllDelivered(t, res, tt.transport)
			if tt.rounds > 0 {
				assert.Equal(t, tt.rounds, res.Published)
			}
			if tt.burst > 1 {
				assert.Zero(t, res.Published%tt.burst, "whole bursts")
			}
		})
	}
}

// Every mode and transport against the longpoll example run as its own
// process.
func TestRunAgainstLongpoll(t *testing.T) {
	runModes(t, testproc.Start(t, "../../examples/longpoll", "-timeout", "2s"), []modeCase{
		{"since over HTTP/1.1", modeSince, "http1", false, 1, 0},
		{"since over h2c", modeSince, "h2c", true, 1, 0},
		{"since, bursts of 5", modeSince, "http1", false, 5, 0},
		{"sse over HTTP/1.1", modeSSE, "http1", false, 1, 0},
		{"sse over h2c, bursts of 5", modeSSE, "h2c", true, 5, 0},
		// Without a cursor a message published between two polls is
		// lost, so the classic mode is checked with lockstep rounds.
		{"classic, rounds", modeClassic, "http1", false, 1, 3},
	})
}

// The hub's transports, against hub/internal/loadserver run as its own
// process; the WebSocket is HTTP/1.1 only.
func TestRunAgainstHub(t *testing.T) {
	srv := testproc.Start(t, "../../hub/internal/loadserver", "-timeout", "2s")
	runModes(t, srv, []modeCase{
		{"WebSocket", modeWS, "http1", false, 1, 0},
		{"WebSocket, bursts of 5", modeWS, "http1", false, 5, 0},
		{"event stream", modeHubSSE, "http1", false, 1, 0},
		{"event stream over h2c", modeHubSSE, "h2c", true, 5, 0},
		{"long-poll", modeHubPoll, "http1", false, 1, 0},
		{"long-poll over h2c, rounds", modeHubPoll, "h2c", true, 1, 3},
	})
	_, err := run(t.Context(), config{Target: "http://" + srv.Addr, Subscribers: 1, Mode: modeWS, H2C: true, Rate: 1, Burst: 1, Duration: time.Second}, nil)
	assert.ErrorContains(t, err, "HTTP/1.1 only")
}

// HTTP/2 over TLS: the longpoll example serves a certificate made for the
// test by the standard library's generate_cert.go.
func TestRunOverTLS(t *testing.T) {
	dir := t.TempDir()
	gen := exec.Command("go", "run", filepath.Join(runtime.GOROOT(), "src/crypto/tls/generate_cert.go"), "-host", "127.0.0.1")
	gen.Dir, gen.Stderr = dir, os.Stderr
	require.NoError(t, gen.Run())
	srv := testproc.Start(t, "../../examples/longpoll",
		"-tls-cert", filepath.Join(dir, "cert.pem"), "-tls-key", filepath.Join(dir, "key.pem"))
	cfg := quick("https://"+srv.Addr, srv.Cmd.Process.Pid)

	// Without -insecure the self-signed certificate is refused: every
	// request is a connect error and nothing is delivered.
	res, err := run(t.Context(), withShortWarmup(cfg), nil)
	require.NoError(t, err)
	assert.Positive(t, res.Errors["certificate"])
	assert.Zero(t, res.Waiting)
	assert.Zero(t, res.Delivered)

	cfg.Insecure = true
	res, err = run(t.Context(), cfg, nil)
	require.NoError(t, err)
	assertAllDelivered(t, res, "h2-tls")
}

func withShortWarmup(cfg config) config {
	cfg.Subscribers, cfg.Warmup, cfg.Grace, cfg.Duration = 2, 200*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	return cfg
}

// A server that dies in the middle of a run ends the run with an error (its
// /proc entry is gone) instead of leaving it waiting.
func TestRunEndsWhenTheServerDies(t *testing.T) {
	srv := testproc.Start(t, "../../examples/longpoll")
	cfg := quick("http://"+srv.Addr, srv.Cmd.Process.Pid)
	cfg.Subscribers, cfg.Warmup = 10, 300*time.Millisecond
	cfg.Settle = time.Second
	go func() {
		time.Sleep(500 * time.Millisecond) // after the warm-up, during the settle
		srv.Cmd.Process.Kill()
	}()
	_, err := run(t.Context(), cfg, nil)
	assert.Error(t, err)
}

// The naive baseline in bench/naive: one broadcast to all reaches all, and
// the usage figures are read from its process too.
func TestRunAgainstNaive(t *testing.T) {
	srv := testproc.Start(t, "../../bench/naive", "-timeout", "2s")
	cfg := quick("http://"+srv.Addr, srv.Cmd.Process.Pid)
	cfg.Rounds = 3
	res, err := run(t.Context(), cfg, nil)
	require.NoError(t, err)
	assertAllDelivered(t, res, "http1")
	assert.Positive(t, res.Server.HeldBytes)
}

// -sigquit: at the end, with every subscriber waiting, the server gets
// SIGQUIT, and a Go server dies of it printing its goroutines.
func TestRunQuitsServer(t *testing.T) {
	srv := testproc.Start(t, "../../bench/naive", "-timeout", "2s")
	cfg := quick("http://"+srv.Addr, srv.Cmd.Process.Pid)
	cfg.Rounds, cfg.QuitServer = 1, true
	res, err := run(t.Context(), cfg, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Published)
	var exit *exec.ExitError
	require.ErrorAs(t, srv.Wait(), &exit)
	assert.Equal(t, 2, exit.ExitCode(), "a Go program's exit status after SIGQUIT")
}

func TestCPUSeconds(t *testing.T) {
	before, err := cpuSeconds(os.Getpid())
	require.NoError(t, err)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := cpuSeconds(os.Getpid())
	require.NoError(t, err)
	assert.GreaterOrEqual(t, after-before, 0.1, "a busy loop of 0.3 s shows in /proc")
	_, err = cpuSeconds(1 << 30)
	assert.Error(t, err, "no such process")
}
