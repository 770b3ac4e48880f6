package continuation_test

// The races: exactly one of Resume, Complete, expiry, disconnect and
// shutdown ends each suspension, and the losers get an error and change
// nothing. These run on the real clock and real scheduler, many times, so
// that -race and the scheduler explore the interleavings.

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

// raceServer suspends every initial dispatch and hands the continuation
// out; it counts redispatches and listener calls.
type raceServer struct {
	cs          chan *continuation.Continuation
	redispatch  atomic.Int32
	timeouts    atomic.Int32
	completions atomic.Int32
	timeout     time.Duration
}

func newRaceServer(timeout time.Duration) *raceServer {
	return &raceServer{cs: make(chan *continuation.Continuation, 1), timeout: timeout}
}

func (s *raceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if !c.IsInitial() {
		s.redispatch.Add(1)
		switch {
		case c.IsExpired() && c.IsResumed(): // resumed while the OnTimeout listener ran
			io.WriteString(w, "TIMEOUT+RESUMED")
		case c.IsExpired():
			io.WriteString(w, "TIMEOUT")
		case c.IsResumed():
			io.WriteString(w, "RESUMED")
		}
		return
	}
	c.SetTimeout(s.timeout)
	c.AddListener(continuation.ListenerFuncs{
		Timeout:  func(*continuation.Continuation) { s.timeouts.Add(1) },
		Complete: func(*continuation.Continuation) { s.completions.Add(1) },
	})
	if err := c.Suspend(); err != nil {
		panic(err)
	}
	s.cs <- c
}

// suspendOne serves one request through a new Dispatcher and returns
// them once the request has suspended.
func (s *raceServer) suspendOne() (*continuation.Dispatcher, *continuationtest.Call, *continuation.Continuation) {
	d := continuation.NewDispatcher(s)
	cl := get(d, "/")
	return d, cl, <-s.cs
}

const raceRounds = 200

// requireLost checks the error of a call that lost its race: the
// suspension had ended (or the whole request had, by the time it ran).
func requireLost(t *testing.T, err error) {
	t.Helper()
	require.True(t, errors.Is(err, continuation.ErrNotSuspended) || errors.Is(err, continuation.ErrCompleted),
		"a call that lost its race returned %v", err)
}

// together runs a and b at once, each on a goroutine of its own, and
// returns their errors once both have returned.
func together(a, b func() error) (errA, errB error) {
	var wg sync.WaitGroup
	wg.Go(func() { errA = a() })
	wg.Go(func() { errB = b() })
	wg.Wait()
	return errA, errB
}

// requireResumeOrComplete checks the outcome of a Resume racing a
// Complete: exactly one won, the loser got the error of a lost race, and
// only a winning Resume redispatched (writing body RESUMED).
func requireResumeOrComplete(t *testing.T, resumeErr, completeErr error, body string, redispatches int32) {
	t.Helper()
	require.True(t, (resumeErr == nil) != (completeErr == nil), "exactly one wins: resume %v, complete %v", resumeErr, completeErr)
	if resumeErr == nil {
		require.Equal(t, "RESUMED", body)
		require.Equal(t, int32(1), redispatches)
		requireLost(t, completeErr)
	} else {
		require.Empty(t, body)
		require.Zero(t, redispatches)
		requireLost(t, resumeErr)
	}
}

// Resume from 100 goroutines at once: exactly one succeeds, one
// redispatch.
func TestResumeFrom100Goroutines(t *testing.T) {
	for range raceRounds / 4 {
		s := newRaceServer(0)
		_, cl, c := s.suspendOne()
		var wins atomic.Int32
		var start, wg sync.WaitGroup
		start.Add(1)
		for range 100 {
			wg.Go(func() {
				start.Wait()
				switch err := c.Resume(); {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, continuation.ErrNotSuspended), errors.Is(err, continuation.ErrCompleted):
				default:
					t.Errorf("unexpected error %v", err)
				}
			})
		}
		start.Done()
		wg.Wait()
		assert.Equal(t, "RESUMED", cl.Wait().Body.String())
		require.Equal(t, int32(1), wins.Load(), "Resume calls that won")
		require.Equal(t, int32(1), s.redispatch.Load(), "redispatches")
		require.Equal(t, int32(1), s.completions.Load())
	}
}

// Scenario 40: Resume racing the timeout. Either the resume won (RESUMED,
// no OnTimeout), or the expiry did and the Resume landed while the
// OnTimeout listener ran (TIMEOUT+RESUMED, one OnTimeout), or after it
// (TIMEOUT, one OnTimeout, Resume got an error); always exactly one
// redispatch.
func TestResumeRacesTimeout(t *testing.T) {
	for i := range raceRounds {
		s := newRaceServer(time.Millisecond)
		_, cl, c := s.suspendOne()
		time.Sleep(time.Duration(i%40) * 50 * time.Microsecond) // sweep across the deadline
		err := c.Resume()
		body := cl.Wait().Body.String()
		require.Equal(t, int32(1), s.redispatch.Load(), "redispatches")
		require.Equal(t, int32(1), s.completions.Load())
		requireOneEnding(t, err, body, s.timeouts.Load())
	}
}

// requireOneEnding checks the outcome of a Resume racing an expiry: the
// Resume returned err, the redispatch wrote body, and the OnTimeout
// listener ran timeouts times.
func requireOneEnding(t *testing.T, err error, body string, timeouts int32) {
	t.Helper()
	switch body {
	case "RESUMED":
		require.NoError(t, err)
		require.Zero(t, timeouts)
	case "TIMEOUT+RESUMED":
		require.NoError(t, err)
		require.Equal(t, int32(1), timeouts)
	case "TIMEOUT":
		requireLost(t, err)
		require.Equal(t, int32(1), timeouts)
	default:
		t.Fatalf("body %q", body)
	}
}

// The same race on the fake clock, with the Resume landing before, at and
// after the deadline: at the exact instant either may win, but never both.
func TestResumeRacesTimeoutFakeClock(t *testing.T) {
	for eps := -20; eps <= 20; eps += 5 {
		synctest.Test(t, func(t *testing.T) {
			s := newRaceServer(100 * time.Millisecond)
			_, cl, c := s.suspendOne()
			errc := make(chan error, 1)
			time.AfterFunc(100*time.Millisecond+time.Duration(eps)*time.Millisecond, func() { errc <- c.Resume() })
			body := cl.Wait().Body.String()
			err := <-errc
			assert.Equal(t, int32(1), s.redispatch.Load())
			switch {
			case eps < 0:
				assert.NoError(t, err)
				assert.Equal(t, "RESUMED", body)
			case eps > 0:
				assert.ErrorIs(t, err, continuation.ErrCompleted)
				assert.Equal(t, "TIMEOUT", body)
			default:
				assert.Equal(t, err == nil, strings.HasSuffix(body, "RESUMED"))
			}
		})
	}
}

// Resume racing Complete: one wins; a redispatch happens only if Resume
// won.
func TestResumeRacesComplete(t *testing.T) {
	for range raceRounds {
		s := newRaceServer(0)
		_, cl, c := s.suspendOne()
		resumeErr, completeErr := together(c.Resume, c.Complete)
		body := cl.Wait().Body.String()
		requireResumeOrComplete(t, resumeErr, completeErr, body, s.redispatch.Load())
		require.Equal(t, int32(1), s.completions.Load())
	}
}

// Resume racing a client disconnect: if the disconnect wins there is no
// redispatch and Resume fails; if Resume wins the redispatch runs (and
// writes to a gone client). Either way OnComplete runs once and nothing is
// left behind (goleak checks at the end of the package).
func TestResumeRacesDisconnect(t *testing.T) {
	for i := range raceRounds {
		s := newRaceServer(0)
		d, cl, c := s.suspendOne()
		var resumeErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			if i%2 == 0 {
				time.Sleep(time.Duration(rand.IntN(20)) * time.Microsecond)
			}
			resumeErr = c.Resume()
		})
		wg.Go(cl.Disconnect)
		wg.Wait()
		cl.Wait()
		<-c.Done()
		require.Equal(t, int32(1), s.completions.Load())
		if resumeErr == nil {
			require.Equal(t, int32(1), s.redispatch.Load())
		} else {
			require.Zero(t, s.redispatch.Load(), "redispatched after losing to the disconnect")
			requireLost(t, resumeErr)
		}
		require.Zero(t, d.Suspended())
	}
}

// Resume racing Shutdown: the request is answered once, by whichever won.
func TestResumeRacesShutdown(t *testing.T) {
	for range raceRounds / 4 {
		s := newRaceServer(0)
		d, cl, c := s.suspendOne()
		resumeErr, shutdownErr := together(c.Resume, func() error { return d.Shutdown(t.Context()) })
		body := cl.Wait().Body.String()
		require.NoError(t, shutdownErr)
		require.Equal(t, int32(1), s.redispatch.Load())
		requireOneEnding(t, resumeErr, body, s.timeouts.Load())
	}
}

// Disconnect while suspended: the request finishes with no redispatch,
// OnComplete runs, Done closes, and the suspension is released.
func TestDisconnectWhileSuspended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newRaceServer(time.Minute)
		d, cl, c := s.suspendOne()
		synctest.Wait()
		assert.Equal(t, 1, d.Suspended())
		cl.Disconnect()
		<-c.Done()
		cl.Wait()
		assert.Zero(t, s.redispatch.Load())
		assert.Zero(t, s.timeouts.Load())
		assert.Equal(t, int32(1), s.completions.Load())
		assert.Zero(t, d.Suspended())
		assert.ErrorIs(t, c.Resume(), continuation.ErrCompleted)
	})
}

// A deadline on the request's context expires the suspension (the handler
// answers), where a cancellation means the client left (it does not).
func TestContextDeadlineExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newRaceServer(time.Hour)
		d := continuation.NewDispatcher(s)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil))
		<-s.cs
		assert.Equal(t, "TIMEOUT", rec.Body.String())
		assert.Equal(t, int32(1), s.timeouts.Load())
		assert.Equal(t, int32(1), s.redispatch.Load())
	})
}

// The outside writer racing the timer: an event source answers the request
// through Continuation.ResponseWriter and completes it, while the
// suspension expires. Whichever wins, the response is one writer's: the
// event's (its Complete won), or the expiry dispatch's, before which any
// write under way finished and after which the event's writes fail with
// ErrNotSuspended. Under -race, nothing writes concurrently.
func TestOutsideWriterRacesExpiry(t *testing.T) {
	var refused atomic.Int32
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsInitial() {
			c.SetTimeout(time.Millisecond)
			require.NoError(t, c.Suspend())
			go func() {
				time.Sleep(time.Millisecond)
				for range 20 {
					if _, err := io.WriteString(c.ResponseWriter(), "event "); err != nil {
						assert.ErrorIs(t, err, continuation.ErrNotSuspended)
						refused.Add(1)
						return
					}
				}
				c.Complete()
			}()
			return
		}
		io.WriteString(w, "expired")
	}))
	srv := continuationtest.NewServer(t, d)
	for range 200 {
		resp, err := srv.Client().Get(srv.URL)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		body := string(b)
		if strings.HasSuffix(body, "expired") {
			rest := body
			for strings.HasPrefix(rest, "event ") {
				rest = rest[len("event "):]
			}
			assert.Equal(t, "expired", rest, "the event's writes, then the expiry's, never interleaved")
		} else {
			assert.Equal(t, strings.Repeat("event ", 20), body)
		}
	}
	t.Logf("the expiry won %d times", refused.Load())
}
