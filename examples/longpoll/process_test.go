package main

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/internal/testproc"
)

// The bad-input table against the running server, over a real socket:
// every case is a clear 4xx (or, for a cursor from the future, a normal
// answer), never a 5xx, a panic or a hang.
func TestBadInputOverTheWire(t *testing.T) {
	addr := testproc.Start(t, ".", "-timeout", "200ms", "-header-timeout", "300ms").Addr
	base := "http://" + addr
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	do := func(method, path, contentType string, body io.Reader) (int, string) {
		req, err := http.NewRequest(method, base+path, body)
		require.NoError(t, err)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name, method, path, contentType string
		body                            io.Reader
		code                            int
	}{
		{"since=abc", "GET", "/subscribe?since=abc", "", nil, 400},
		{"since=-1", "GET", "/subscribe?since=-1", "", nil, 400},
		{"huge since: a cursor from the future", "GET", "/subscribe?since=18446744073709551615", "", nil, 200},
		{"since beyond uint64", "GET", "/subscribe?since=18446744073709551616", "", nil, 400},
		{"since with an epoch of 0", "GET", "/subscribe?since=0-5", "", nil, 400},
		{"publish by GET", "GET", "/publish?message=x", "", nil, 405},
		{"10 MB body", "POST", "/publish", form, strings.NewReader("message=" + strings.Repeat("x", 10<<20)), 413},
		{"invalid UTF-8", "POST", "/publish", form, strings.NewReader(url.Values{"message": {"\xff\xfe"}}.Encode()), 400},
		{"empty message", "POST", "/publish", form, strings.NewReader("message="), 400},
		{"unknown path", "GET", "/topics/nope", "", nil, 404},
	}
	for _, m := range []string{"PUT", "DELETE", "PATCH", "POST", "TRACE"} {
		tests = append(tests, struct {
			name, method, path, contentType string
			body                            io.Reader
			code                            int
		}{"method " + m + " on /subscribe", m, "/subscribe", "", nil, 405})
	}
	for _, m := range []string{"PUT", "DELETE", "PATCH"} {
		tests = append(tests, struct {
			name, method, path, contentType string
			body                            io.Reader
			code                            int
		}{"method " + m + " on /publish", m, "/publish", "", nil, 405})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(tt.method, tt.path, tt.contentType, tt.body)
			assert.Equal(t, tt.code, code, body)
			assert.Less(t, code, 500)
		})
	}

	// A publish from another site's page (a form posted across origins, as
	// a browser marks it) is refused; the same from curl is not.
	for _, tt := range []struct {
		header, value string
		code          int
	}{
		{"Sec-Fetch-Site", "cross-site", http.StatusForbidden},
		{"Origin", "https://evil.example", http.StatusForbidden},
		{"Sec-Fetch-Site", "same-origin", http.StatusOK},
	} {
		req, err := http.NewRequest(http.MethodPost, base+"/publish", strings.NewReader("message=csrf"))
		require.NoError(t, err)
		req.Header.Set("Content-Type", form)
		req.Header.Set(tt.header, tt.value)
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, tt.code, resp.StatusCode, "%s: %s", tt.header, tt.value)
	}

	// Slow headers (slowloris): the server hangs up once the header timeout
	// has passed, instead of holding the connection.
	hungUp, err := testproc.HangsUpOnSlowHeaders(addr, 10*time.Second)
	require.NoError(t, err)
	assert.True(t, hungUp, "a client whose headers never finish is hung up on")
}

// A subscriber that does not read its answer (every message since the
// start, 12 MB here) holds the worker writing it for -write-timeout, no
// longer: with one worker, the next request is answered once the write
// gives up, and the slow subscriber's answer is cut short.
func TestSlowReaderOverTheWire(t *testing.T) {
	addr := testproc.Start(t, ".", "-workers", "1", "-write-timeout", "300ms").Addr
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	chunk := url.Values{"message": {strings.Repeat("x", 60<<10)}}.Encode()
	for range 200 {
		resp, err := client.Post("http://"+addr+"/publish", "application/x-www-form-urlencoded", strings.NewReader(chunk))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}

	slow, err := testproc.DialNonReader(addr)
	require.NoError(t, err)
	defer slow.Close()
	_, err = io.WriteString(slow, "GET /subscribe?since= HTTP/1.1\r\nHost: longpoll\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, slow.SetReadDeadline(time.Now().Add(20*time.Second)))
	answer, err := http.ReadResponse(bufio.NewReaderSize(slow, 4096), nil) // being written: the worker is busy with it
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, answer.StatusCode)

	resp, err := client.Get("http://" + addr + "/subscribe?since=abc")
	require.NoError(t, err, "the next request is answered once the slow write gives up")
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	n, err := io.Copy(io.Discard, answer.Body)
	assert.Error(t, err, "the slow answer was cut short")
	assert.Less(t, n, answer.ContentLength)
}
