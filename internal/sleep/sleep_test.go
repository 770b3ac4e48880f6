package sleep_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cometkit/cometkit/internal/sleep"
)

// A context that has already ended does not wait at all.
func TestEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.False(t, sleep.For(ctx, time.Hour), "an ended context does not wait")
}

// With its context live, For returns after d and says so.
func TestWaitsTheWholeDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		assert.True(t, sleep.For(t.Context(), time.Minute))
		assert.Equal(t, time.Minute, time.Since(start))
	})
}

// A context that ends during the wait ends the wait at once: a shutdown is
// not held up by a retry's backoff.
func TestEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		assert.False(t, sleep.For(ctx, time.Hour))
		assert.Equal(t, time.Second, time.Since(start), "returns when the context ends, not after the hour")
	})
}

// Without a duration, For does not wait, and tells a live context from an
// ended one every time (a timer of 0 would race the context's Done).
func TestNoDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		assert.True(t, sleep.For(t.Context(), 0))
		assert.True(t, sleep.For(t.Context(), -time.Second))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		for range 100 {
			assert.False(t, sleep.For(ctx, 0))
		}
		assert.Zero(t, time.Since(start))
	})
}

func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	fmt.Println(sleep.For(ctx, time.Millisecond))
	cancel() // a shutdown
	fmt.Println(sleep.For(ctx, time.Hour))
	// Output:
	// true
	// false
}
