package argcheck_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cometkit/cometkit/internal/argcheck"
)

const check = argcheck.Package("pkg")

// The message is "<package>: <call>(<arguments>): <why>", whatever the
// argument's type: what every package's tests of its options rely on.
func TestMessageFormat(t *testing.T) {
	var (
		logger  *slog.Logger
		handler http.Handler
		hook    func()
	)
	for _, tt := range []struct {
		arg  any
		want string
	}{
		{0, "pkg: WithX(0): why"},
		{-3, "pkg: WithX(-3): why"},
		{1.5, "pkg: WithX(1.5): why"},
		{-time.Second, "pkg: WithX(-1s): why"},
		{"", `pkg: WithX(""): why`},
		{`a{"b`, `pkg: WithX("a{\"b"): why`},
		{nil, "pkg: WithX(nil): why"},
		{logger, "pkg: WithX(nil): why"},
		{handler, "pkg: WithX(nil): why"},
		{hook, "pkg: WithX(nil): why"},
		{[]string(nil), "pkg: WithX(nil): why"},
		{argcheck.Args{0.0, 1}, "pkg: WithX(0, 1): why"},
		{argcheck.Args{"a", nil, time.Minute}, `pkg: WithX("a", nil, 1m0s): why`},
		{argcheck.Args{}, "pkg: WithX(): why"},
	} {
		assert.PanicsWithValue(t, tt.want, func() { check.That(false, "WithX", tt.arg, "why") })
	}
}

func TestThatPassesWhatCanBeMeant(t *testing.T) {
	assert.NotPanics(t, func() { check.That(true, "WithX", nil, "why") })
}

// The checks most options need take the least value that can be meant and
// say the same reason in every package.
func TestAtLeastOneAndPositive(t *testing.T) {
	assert.Equal(t, 1, check.AtLeastOne("WithSize", 1))
	assert.Equal(t, 7, check.AtLeastOne("WithSize", 7))
	assert.PanicsWithValue(t, "pkg: WithSize(0): must be at least 1", func() { check.AtLeastOne("WithSize", 0) })
	assert.PanicsWithValue(t, "pkg: WithSize(-2): must be at least 1", func() { check.AtLeastOne("WithSize", -2) })

	assert.Equal(t, time.Nanosecond, check.Positive("WithTimeout", time.Nanosecond))
	assert.Equal(t, time.Hour, check.Positive("WithTimeout", time.Hour))
	assert.PanicsWithValue(t, "pkg: WithTimeout(0s): must be more than 0", func() { check.Positive("WithTimeout", 0) })
	assert.PanicsWithValue(t, "pkg: WithTimeout(-1ms): must be more than 0", func() { check.Positive("WithTimeout", -time.Millisecond) })
}

func Example() {
	const check = argcheck.Package("pool")
	withWorkers := func(n int) {
		check.That(n >= 1, "WithWorkers", n, "a pool needs at least one worker")
	}
	defer func() { fmt.Println(recover()) }()
	withWorkers(0)
	// Output: pool: WithWorkers(0): a pool needs at least one worker
}
