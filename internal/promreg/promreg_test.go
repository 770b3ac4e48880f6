package promreg_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"

	"github.com/cometkit/cometkit/internal/promreg"
)

func TestSharedCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}))
	b := promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}))
	a.Inc()
	b.Inc()
	assert.Same(t, a, b, "the second instance shares the first one's collector")
}

func TestClashPanicsNamingTheMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}))
	defer func() {
		p := recover()
		assert.Contains(t, p, "cometkit: registering")
		assert.Contains(t, p, `"x_total"`)
		assert.Contains(t, p, "different label names or a different help string")
	}()
	promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "other help"}))
	t.Error("no panic")
}
