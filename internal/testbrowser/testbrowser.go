// Package testbrowser runs headless Chromium for tests, through chromedp:
// a browser per test, a browser context per person (cookies, storage and
// shared workers of their own), tabs, and the few actions the tests of
// pages need. Chromium is Debian's package, which ./test installs, or
// $CHROMIUM; a test that needs it fails, rather than skips, without it.
//
//	b := testbrowser.Start(t)
//	alice := b.Person()
//	alice.Do(chromedp.Navigate(url))
//	alice.WaitFor(`document.querySelector('#state').textContent === 'connected'`)
//
// Exceptions a page throws, and what it logs as errors, go to the test's
// log.
package testbrowser

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// timeout bounds each action: generous, so that a slow machine passes and
// a hung page fails.
const timeout = 30 * time.Second

// Path finds the browser: $CHROMIUM, or Debian's binary.
func Path(t testing.TB) string {
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

// A Browser is one headless Chromium, closed at the end of the test that
// started it.
type Browser struct {
	t     *testing.T
	first context.Context // the first tab, which holds the browser open
}

// Start starts a browser with a fresh profile and nothing running in the
// background, in a window of 900 × 700.
func Start(t *testing.T) *Browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Path(t)),
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
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	// The first action on a context starts its browser or tab, which then
	// lives as long as the context given; so start each on a context that
	// outlives the test's steps.
	first, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(first))
	return &Browser{t: t, first: first}
}

// A Tab is one page. T is the test its failures fail: a test with
// subtests sets it to each subtest's.
type Tab struct {
	T   *testing.T
	Ctx context.Context
}

// Person opens a tab in a browser context of its own: another person, with
// cookies, storage and shared workers of their own.
func (b *Browser) Person() *Tab {
	return open(b.t, b.first, chromedp.WithNewBrowserContext())
}

// Another opens another tab of the same person.
func (p *Tab) Another() *Tab {
	return open(p.T, p.Ctx)
}

func open(t *testing.T, parent context.Context, opts ...chromedp.ContextOption) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent, opts...)
	require.NoError(t, chromedp.Do(ctx))
	tab := &Tab{T: t, Ctx: ctx}
	logged := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		defer close(logged)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError && m.Source == "" { // not the browser's own log of failed requests, which tests cause
				tab.T.Logf("page %s: %s", m.URL, m)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-logged // no logging after the test
	})
	return tab
}

// Do runs steps, within the action timeout.
func (p *Tab) Do(steps ...chromedp.Action[chromedp.Void]) {
	p.T.Helper()
	ctx, cancel := context.WithTimeout(p.Ctx, timeout)
	defer cancel()
	require.NoError(p.T, chromedp.Do(ctx, steps...))
}

// Text returns the text of the first element that sel selects, once there
// is one.
func (p *Tab) Text(sel string) string {
	p.T.Helper()
	return Run(p, chromedp.TextContent(chromedp.CSS(sel)))
}

// Run runs an action that returns a value, within the action timeout.
func Run[T any](p *Tab, a chromedp.Action[T]) T {
	p.T.Helper()
	ctx, cancel := context.WithTimeout(p.Ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(p.T, err)
	return v
}

// Eval evaluates a JavaScript expression that gives a number.
func (p *Tab) Eval(expr string) int {
	p.T.Helper()
	return Run(p, chromedp.Evaluate[int](expr))
}

// WaitFor waits until a JavaScript expression is true.
func (p *Tab) WaitFor(expr string) {
	p.T.Helper()
	ctx, cancel := context.WithTimeout(p.Ctx, timeout)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr))
	require.NoError(p.T, err, "waiting for %s", expr)
}

// Screenshot saves the whole page as a test artifact (go test -artifacts
// keeps them).
func (p *Tab) Screenshot(name string) {
	p.T.Helper()
	shot := Run(p, chromedp.FullScreenshot(100))
	path := filepath.Join(p.T.ArtifactDir(), name+".png")
	require.NoError(p.T, os.WriteFile(path, shot, 0o644))
	p.T.Logf("screenshot: %s", path)
}
