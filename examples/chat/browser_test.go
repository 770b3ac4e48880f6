package main

// The chat as a person uses it: two pages in headless Chromium (Debian's
// package; ./test installs it) join one room and talk, on each transport.
// The screenshot is a test artifact: go test -artifacts ./examples/chat.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chromium finds the browser: $CHROMIUM, or Debian's binary.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: run ./test, which installs Debian's chromium package, or set $CHROMIUM")
	return ""
}

func TestBrowser(t *testing.T) {
	c := newChat(t, 2*time.Second)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(900, 700),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	// The first action on a context starts its browser or tab, which then
	// lives as long as the context given; so start each on a context that
	// outlives the test's steps, and open Bob's tab once the browser runs.
	alice, cancelAlice := chromedp.NewContext(allocCtx)
	defer cancelAlice()
	require.NoError(t, chromedp.Do(alice))
	bob, cancelBob := chromedp.NewContext(alice) // a second tab in the same browser
	defer cancelBob()
	require.NoError(t, chromedp.Do(bob))

	do := func(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		require.NoError(t, chromedp.Do(ctx, steps...))
	}
	text := func(t *testing.T, ctx context.Context, sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		require.NoError(t, err)
		return s
	}
	eval := func(t *testing.T, ctx context.Context, expr string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](expr))
		require.NoError(t, err)
		return n
	}
	waitFor := func(t *testing.T, ctx context.Context, expr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr))
		require.NoError(t, err, "waiting for %s", expr)
	}
	join := func(t *testing.T, ctx context.Context, room, nick, transport string) {
		t.Helper()
		do(t, ctx,
			chromedp.Navigate(c.ts.URL),
			chromedp.WaitVisible(chromedp.CSS(`#join`)),
			chromedp.SetValue(chromedp.CSS(`#join input[name=room]`), room),
			chromedp.SetValue(chromedp.CSS(`#join input[name=nick]`), nick),
			chromedp.SetValue(chromedp.CSS(`#join select[name=transport]`), transport),
			chromedp.Click(chromedp.CSS(`#join button`)),
			chromedp.WaitVisible(chromedp.CSS(`#chat`)),
		)
		waitFor(t, ctx, `document.querySelector('#state').dataset.state === 'connected'`)
	}
	say := func(t *testing.T, ctx context.Context, msg string) {
		t.Helper()
		do(t, ctx,
			chromedp.SetValue(chromedp.CSS(`#send input[name=text]`), msg),
			chromedp.Click(chromedp.CSS(`#send button`)),
		)
	}
	lastMessage := func(t *testing.T, ctx context.Context, want string) string {
		t.Helper()
		waitFor(t, ctx, `(() => { const li = document.querySelector('#messages li:last-child'); return !!li && li.textContent.includes(`+jsString(want)+`) })()`)
		return text(t, ctx, `#messages li:last-child`)
	}

	for _, transport := range []string{"longpoll", "sse"} {
		t.Run(transport, func(t *testing.T) {
			room := "room-" + transport
			join(t, alice, room, "alice", transport)
			join(t, bob, room, "bob", transport)

			say(t, alice, "hello bob")
			assert.Equal(t, "alicehello bob", lastMessage(t, bob, "hello bob"))

			// Markup shows as text and never runs.
			attack := `<script>window.pwned=1</script><img src=x onerror="window.pwned=1"><b>bold</b>`
			say(t, alice, attack)
			assert.Equal(t, "alice"+attack, lastMessage(t, bob, "<b>bold</b>"))
			assert.Zero(t, eval(t, bob, `window.pwned ? 1 : 0`), "the message ran as script")
			assert.Zero(t, eval(t, bob, `document.querySelectorAll('#messages b, #messages img, #messages script').length`),
				"the message was parsed as HTML")

			// Who is online.
			waitFor(t, bob, `document.querySelector('#members').textContent.includes('alice')`)
			members := text(t, bob, `#members`)
			assert.Contains(t, members, "alice")
			assert.Contains(t, members, "bob")

			// Bob reloads: after joining again he sees the history.
			join(t, bob, room, "bob", transport)
			history := text(t, bob, `#messages`)
			assert.Contains(t, history, "hello bob")
			assert.Contains(t, history, "<b>bold</b>")

			ctx, cancel := context.WithTimeout(bob, 30*time.Second)
			defer cancel()
			shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			require.NoError(t, err)
			path := filepath.Join(t.ArtifactDir(), "chat-"+transport+".png")
			require.NoError(t, os.WriteFile(path, shot, 0o644))
			t.Logf("screenshot: %s", path)
		})
	}
	cancelBob()
	cancelAlice()
	cancelAlloc()
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b := []byte{'"'}
	for _, r := range s {
		switch r {
		case '"', '\\':
			b = append(b, '\\', byte(r))
		default:
			b = append(b, string(r)...)
		}
	}
	return string(append(b, '"'))
}
