// Package promreg registers Prometheus collectors so that several
// instances of a component can share one registry.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg, or returns the collector already registered
// under the same description, so that two instances on one registry share
// their metrics. Any other failure is a setup error (a collector of another
// kind or with other labels under the same name) and panics, naming the
// metric, as prometheus.MustRegister does: the program is wired wrongly,
// and serving unobserved would hide it.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("cometkit: registering %s: %v", describe(c), err))
}

// describe names the collector's metrics for a panic message.
func describe(c prometheus.Collector) string {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	var names []string
	for d := range ch {
		names = append(names, d.String())
	}
	return fmt.Sprint(names)
}
