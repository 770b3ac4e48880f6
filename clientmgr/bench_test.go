package clientmgr_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/internal/fanoutbench"
	"github.com/cometkit/cometkit/continuation"
)

// BenchmarkBroadcast10k is one Broadcast to 10,000 registered requests,
// timed until every one of them has been redispatched and answered.
//
//	go test -run '^$' -bench Broadcast10k -benchmem ./clientmgr/
func BenchmarkBroadcast10k(b *testing.B) {
	m := clientmgr.New()
	defer m.Close()
	fanoutbench.Run(b, m, m, 10_000)
}

// BenchmarkRegisterCycle is one request's streaming cycle: suspend,
// register, resume, redispatch (which ends the registration), against the
// same cycle without the Manager.
//
//	go test -run '^$' -bench RegisterCycle -benchmem ./clientmgr/
func BenchmarkRegisterCycle(b *testing.B) {
	for _, withManager := range []bool{false, true} {
		name := "dispatch-only"
		if withManager {
			name = "register+unregister"
		}
		b.Run(name, func(b *testing.B) {
			m := clientmgr.New()
			defer m.Close()
			cycles := b.N
			d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c := continuation.FromRequest(r)
				n, _ := c.Attribute("n").(int)
				if n == cycles {
					return
				}
				c.SetAttribute("n", n+1)
				c.Suspend()
				if withManager {
					m.Register("room", 0, c)
				}
				c.Resume()
			}))
			b.ResetTimer()
			d.ServeHTTP(fanoutbench.NewDiscard(), httptest.NewRequest(http.MethodGet, "/", nil))
		})
	}
}
