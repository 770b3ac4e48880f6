// Package sleep waits for a while unless a context ends first: the pause
// between a retry and the next, or between a load generator's steps, that
// must not hold up a shutdown.
//
//	for backoff := time.Millisecond; ; backoff *= 2 {
//		if err := try(ctx); err == nil {
//			return nil
//		}
//		if !sleep.For(ctx, backoff) {
//			return context.Cause(ctx)
//		}
//	}
package sleep

import (
	"context"
	"time"
)

// For waits for d, or until ctx is done, whichever comes first, and reports
// whether it waited the whole d with ctx still live. A d of 0 or less does
// not wait: For then reports whether ctx is live.
func For(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
