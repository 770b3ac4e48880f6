//go:build !linux

package continuation

import (
	"errors"
	"log/slog"
	"net"
)

// pollerSupported says whether this platform has a poller for detached
// connections: requests wait attached on other systems.
const pollerSupported = false

type poller struct{}

type pollHandle struct{}

func newPoller(func(*Continuation), *slog.Logger) (*poller, error) { return nil, errors.ErrUnsupported }

func (*poller) add(*Continuation, net.Conn) pollHandle { return pollHandle{} }
func (*poller) remove(pollHandle)                      {}
func (*poller) unwatch(pollHandle)                     {}
func (*poller) registered() []*Continuation            { return nil }
func (*poller) stop()                                  {}
