package continuation

import "errors"

// Errors returned by the Continuation and Handle methods. Compare them with
// errors.Is. Misuse of a Continuation is reported by these errors, never by
// a panic; only a nil *Continuation (a handler served without a
// Dispatcher) panics, to say what is missing.
var (
	// ErrAlreadySuspended is returned by Suspend when the running dispatch
	// has already suspended the request.
	ErrAlreadySuspended = errors.New("continuation: already suspended in this dispatch")

	// ErrNotDispatched is returned by Suspend when no dispatch of the request
	// is running: the handler has returned, or the call comes from a
	// listener or another goroutine while the request waits.
	ErrNotDispatched = errors.New("continuation: not in a dispatch")

	// ErrNotSuspended is returned by Resume and Complete when the request is
	// not suspended: it never was, it is being redispatched, or this
	// suspension was already resumed, completed or expired (including a
	// second Resume, and a call through a Handle of an earlier suspension).
	ErrNotSuspended = errors.New("continuation: not suspended")

	// ErrCompleted is returned by every state-changing call once the request
	// has finished.
	ErrCompleted = errors.New("continuation: request completed")

	// ErrOverloaded is returned by Suspend when WithMaxSuspended requests are
	// already suspended on the Dispatcher.
	ErrOverloaded = errors.New("continuation: too many suspended requests")

	// ErrShutdown is returned by Suspend once Dispatcher.Drain (or
	// Shutdown) has begun: the handler should answer now instead of
	// waiting.
	ErrShutdown = errors.New("continuation: dispatcher shutting down")
)
