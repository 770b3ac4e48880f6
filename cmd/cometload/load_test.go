package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/internal/testproc"
)

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8080", "http://127.0.0.9:1", "http://localhost:80", "http://[::1]:8080"} {
		assert.NoError(t, checkLoopback(ok), ok)
	}
	for _, bad := range []string{"http://10.0.0.1:8080", "http://192.168.1.2", "http://example.com", "http://8.8.8.8", "not a url", ""} {
		assert.Error(t, checkLoopback(bad), bad)
	}
}

// A short run against the longpoll example, over HTTP/1.1 from several
// source addresses and over h2c: every message reaches every subscriber
// once, and the figures are filled in.
func TestRunAgainstLongpoll(t *testing.T) {
	srv := testproc.Start(t, "../../examples/longpoll")
	target, pid := "http://"+srv.Addr, srv.Cmd.Process.Pid
	for _, h2c := range []bool{false, true} {
		res, err := run(context.Background(), config{
			Target: target, Subscribers: 50, SourceIPs: 4, H2C: h2c, ServerPID: pid,
			Rate: 50, Duration: time.Second, Warmup: 200 * time.Millisecond, Grace: 10 * time.Second,
		}, nil)
		require.NoError(t, err)
		assert.Greater(t, res.Published, 10, "h2c=%v", h2c)
		assert.Equal(t, res.Expected, res.Delivered, "h2c=%v", h2c)
		assert.Equal(t, 1.0, res.DeliveredFraction)
		assert.Zero(t, res.Duplicates)
		assert.Empty(t, res.Errors)
		assert.Positive(t, res.LatencyP99Ms)
		assert.GreaterOrEqual(t, res.FanoutP99Ms, res.FanoutP50Ms)
		assert.Greater(t, res.ServerRSSBytes, int64(1<<20), "the server's RSS")
	}
}

func TestRunRefusesRemoteTargets(t *testing.T) {
	_, err := run(context.Background(), config{Target: "http://10.1.2.3:8080", Subscribers: 1, Rate: 1, Duration: time.Second}, nil)
	assert.ErrorContains(t, err, "not a loopback address")
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
