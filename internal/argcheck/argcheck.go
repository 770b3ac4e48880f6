// Package argcheck rejects the arguments of options and constructors that
// cannot be meant (a negative size, a pool of no workers, a nil logger),
// so that every cometkit package panics about them in one format:
//
//	<package>: <call>(<arguments>): <why>
//
// as in "continuation: WithWorkers(0): a pool needs at least one worker".
// The message names what the caller wrote, with the value it passed, and
// says why that cannot be meant or what to pass instead.
//
// Each package declares its prefix once and checks where it takes the
// argument:
//
//	const check = argcheck.Package("continuation")
//
//	func WithWorkers(n int) Option {
//		return func(c *config) {
//			check.That(n >= 1, "WithWorkers", n, "a pool needs at least one worker")
//			c.workers = n
//		}
//	}
//
// [Package.AtLeastOne] and [Package.Positive] are the checks most options
// need, with the reason said the same way everywhere:
//
//	return func(c *config) { c.maxTopics = check.AtLeastOne("WithMaxTopics", n) }
//
// A string argument is shown quoted and a nil one as nil, so that
// WithPrefix("") and WithLogger(nil) read as the caller wrote them; [Args]
// shows a call of several arguments.
package argcheck

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// A Package is the name of the package whose arguments are checked: the
// first word of its messages.
type Package string

// That panics with the message "<p>: <call>(<arg>): <why>" unless ok.
// call is what the caller wrote ("WithWorkers", "Middleware.Handler"); arg
// is the value it passed, or [Args] for several.
func (p Package) That(ok bool, call string, arg any, why string) {
	if !ok {
		panic(string(p) + ": " + call + "(" + format(arg) + "): " + why)
	}
}

// AtLeastOne returns n, the size or count that call was given, or panics
// with "<p>: <call>(<n>): must be at least 1" if n is less.
func (p Package) AtLeastOne(call string, n int) int {
	p.That(n >= 1, call, n, "must be at least 1")
	return n
}

// Positive returns d, the timeout or interval that call was given, or
// panics with "<p>: <call>(<d>): must be more than 0" if d is not.
func (p Package) Positive(call string, d time.Duration) time.Duration {
	p.That(d > 0, call, d, "must be more than 0")
	return d
}

// Args are the arguments of a call that takes several, shown in order,
// separated by commas: Args{0.0, 1} as "0, 1".
type Args []any

func format(arg any) string {
	if args, ok := arg.(Args); ok {
		shown := make([]string, len(args))
		for i, a := range args {
			shown[i] = format(a)
		}
		return strings.Join(shown, ", ")
	}
	if s, ok := arg.(string); ok {
		return strconv.Quote(s)
	}
	if isNil(arg) {
		return "nil"
	}
	return fmt.Sprint(arg)
}

// isNil reports whether v is nil itself or holds the nil of a type that
// has one (a pointer, func, map, slice or channel), as WithLogger(nil)
// passes a nil *slog.Logger: fmt would show either as "<nil>".
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}
