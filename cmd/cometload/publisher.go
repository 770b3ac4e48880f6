package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cometkit/cometkit/internal/sleep"
)

// A publisher posts messages whose payload is unique to the run; the send
// time is kept beside it for latency.
type publisher struct {
	client   *http.Client
	cfg      config
	st       *stats
	progress io.Writer
	n        int // messages accepted so far
}

// steady publishes cfg.Burst messages at every tick of cfg.Rate for
// cfg.Duration and returns how many were accepted. A tick that comes while
// the last burst is still being sent is skipped, as a real publisher would
// fall behind.
func (p *publisher) steady(ctx context.Context) int {
	tick := time.NewTicker(time.Duration(float64(time.Second) / p.cfg.Rate))
	defer tick.Stop()
	end := time.Now().Add(p.cfg.Duration)
	lastReport := time.Now()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return p.n
		case <-tick.C:
		}
		for range p.cfg.Burst {
			p.publish()
		}
		if time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			fmt.Fprintf(p.progress, "cometload: %d published, %d polls, %d waiting\n", p.n, p.st.polls.Load(), p.st.waiting.Load())
		}
	}
	return p.n
}

// rounds publishes cfg.Rounds single messages, each once every subscriber
// has the one before and is waiting again (plus cfg.Settle), so that each
// is one broadcast to all: its fan-out time is the time to reach them all.
func (p *publisher) rounds(ctx context.Context) int {
	for round := range p.cfg.Rounds {
		if round > 0 {
			awaitWaiting(ctx, p.st, p.cfg.Subscribers, p.cfg.Grace, io.Discard)
			if !sleep.For(ctx, p.cfg.Settle) {
				break
			}
		}
		p.publish()
		awaitDelivered(ctx, p.st, p.n, p.cfg.Grace)
		fmt.Fprintf(p.progress, "cometload: round %d of %d delivered\n", round+1, p.cfg.Rounds)
	}
	return p.n
}

// publish posts one message and records it as published if the server
// accepted it.
func (p *publisher) publish() {
	sent := time.Now()
	payload := strconv.FormatInt(sent.UnixNano(), 10) + "-" + strconv.Itoa(p.n)
	// Known before it is sent, so that a delivery racing the publish
	// response is counted.
	p.st.mu.Lock()
	p.st.published[payload] = sent
	p.st.mu.Unlock()
	resp, err := p.client.PostForm(p.cfg.Target+"/publish", url.Values{"message": {payload}})
	ok := err == nil && resp.StatusCode == http.StatusOK
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	p.st.mu.Lock()
	if ok {
		p.st.order = append(p.st.order, payload)
	} else {
		delete(p.st.published, payload)
	}
	p.st.mu.Unlock()
	if !ok {
		p.st.fail("publish")
		return
	}
	p.n++
}
