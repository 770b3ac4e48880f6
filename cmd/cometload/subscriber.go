package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cometkit/cometkit/internal/sleep"
	"github.com/cometkit/cometkit/sse"
)

// newClients makes the HTTP clients the subscribers share, one for the
// publisher, and names the transport. HTTP/1.1: one client per source
// address, a connection per waiting request. HTTP/2 (h2c, or TLS for an
// https:// target): one client per cfg.Streams subscribers, each held to a
// single connection, because a transport that may open more dials a new
// connection for nearly every request of a burst before the first
// connection's settings arrive, and runs out of files.
func newClients(cfg config) (subscribers []*http.Client, publisher *http.Client, transport string) {
	h2 := func() *http.Transport {
		t := &http.Transport{HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: true}}
		var p http.Protocols
		if strings.HasPrefix(cfg.Target, "https://") {
			p.SetHTTP2(true)
			// Loopback only; a test server's certificate is often self-signed.
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: cfg.Insecure}
		} else {
			p.SetUnencryptedHTTP2(true)
		}
		t.Protocols = &p
		return t
	}
	switch {
	case strings.HasPrefix(cfg.Target, "https://"):
		transport = "h2-tls"
	case cfg.H2C:
		transport = "h2c"
	default:
		clients := make([]*http.Client, max(cfg.SourceIPs, 1))
		share := (cfg.Subscribers + len(clients) - 1) / len(clients)
		for i := range clients {
			dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%254))}}
			clients[i] = &http.Client{Transport: &http.Transport{
				DialContext:         dialer.DialContext,
				MaxIdleConnsPerHost: share,
				// A subscriber re-polls before its last connection is back
				// in the pool; unbounded, the transport would dial another
				// for it, and near the file limit run out.
				MaxConnsPerHost: share,
			}}
		}
		return clients, &http.Client{}, "http1"
	}
	streams := max(cfg.Streams, 1)
	clients := make([]*http.Client, (cfg.Subscribers+streams-1)/streams)
	for i := range clients {
		clients[i] = &http.Client{Transport: h2()}
	}
	return clients, &http.Client{Transport: h2()}, transport
}

// A subscriber is one client of the server, receiving until its context
// ends. It re-polls (or reconnects) at once after every answer.
type subscriber struct {
	id     int
	client *http.Client
	target string
	st     *stats
	seen   map[string]bool // payloads received, for duplicates
	cursor string          // the server's cursor: the next of the last answer, or the last event id
}

func (s *subscriber) run(ctx context.Context, mode string) {
	s.seen = map[string]bool{}
	for ctx.Err() == nil {
		var err error
		switch mode {
		case modeSSE:
			err = s.stream(ctx)
		case modeWS:
			err = s.socket(ctx)
		case modeHubSSE:
			err = s.hubStream(ctx)
		case modeHubPoll:
			err = s.hubPoll(ctx)
		default:
			err = s.poll(ctx, mode == modeSince)
		}
		if err != nil && ctx.Err() == nil {
			s.st.fail(err.Error())
			sleep.For(ctx, 100*time.Millisecond) // back off, as a real client would
		}
	}
}

// loadError is a failure counted by kind.
type loadError string

func (e loadError) Error() string { return string(e) }

// classify names a failed request's error by kind, for the report.
func classify(err error) loadError {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free local port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return "certificate"
	}
	// Anything else by its message, cut short: HTTP/2 stream and
	// connection errors end up here.
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "Get ") {
		msg = msg[i+2:]
	}
	return loadError(msg[:min(len(msg), 60)])
}

// longPoll makes a GET (or, with a body, a POST of JSON) whose request,
// once written, counts as waiting until its answer comes. The transport's
// own goroutine reports the write (over HTTP/2), hence the atomic.
func (s *subscriber) longPoll(ctx context.Context, path string, body []byte) (*http.Response, error) {
	var written atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
		if !written.Swap(true) {
			s.st.waiting.Add(1)
		}
	}}
	method, r := http.MethodGet, io.Reader(nil)
	if body != nil {
		method, r = http.MethodPost, bytes.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, s.target+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	s.st.polls.Add(1)
	resp, err := s.client.Do(req)
	if written.Swap(true) {
		s.st.waiting.Add(-1)
	}
	if err != nil {
		return nil, classify(err)
	}
	return resp, nil
}

// poll makes one long-poll and records what it brought.
func (s *subscriber) poll(ctx context.Context, since bool) error {
	path := "/subscribe"
	if since {
		path += "?since=" + url.QueryEscape(s.cursor)
	}
	resp, err := s.longPoll(ctx, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var payloads []string
	switch {
	case resp.StatusCode == http.StatusNoContent && !since: // classic: a timeout
	case resp.StatusCode != http.StatusOK:
		return notOK(resp)
	case since:
		var batch struct {
			Messages []struct {
				Data string `json:"data"`
			} `json:"messages"`
			Next string `json:"next"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&batch); err != nil {
			return loadError("decode")
		}
		for _, m := range batch.Messages {
			payloads = append(payloads, m.Data)
		}
		s.cursor = batch.Next
	default:
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return loadError("read")
		}
		payloads = []string{string(b)}
	}
	s.st.deliver(s.id, payloads, s.seen, time.Now())
	return nil
}

// stream reads one event stream until it ends, recording each event; the
// next call resumes after the last event id.
func (s *subscriber) stream(ctx context.Context) error {
	resp, err := s.openStream(ctx, s.target+"/events", s.cursor)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	s.st.waiting.Add(1)
	defer s.st.waiting.Add(-1)
	return readEvents(ctx, resp.Body, func(ev sse.Event) error {
		if ev.ID != "" {
			s.cursor = ev.ID
		}
		if ev.Type == "message" {
			s.st.deliver(s.id, []string{string(ev.Data)}, s.seen, time.Now())
		}
		return nil
	})
}

// openStream opens an event stream at u, resumed after lastEventID if it
// is not "", and checks that it started.
func (s *subscriber) openStream(ctx context.Context, u, lastEventID string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	s.st.polls.Add(1)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, classify(err)
	}
	if err := notOK(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// readEvents hands each event of a stream to handle until the stream ends
// (an error, unless ctx ended it) or handle fails.
func readEvents(ctx context.Context, body io.Reader, handle func(sse.Event) error) error {
	events := sse.NewReader(body)
	for {
		ev, err := events.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return loadError("stream ended")
		}
		if err := handle(ev); err != nil {
			return err
		}
	}
}

// notOK is the failure of an answer that is not 200 OK, read to its end so
// that its connection serves again; nil for 200 OK.
func notOK(resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	io.Copy(io.Discard, resp.Body)
	return loadError(strconv.Itoa(resp.StatusCode))
}
