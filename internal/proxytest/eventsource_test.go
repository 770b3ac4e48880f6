package proxytest_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// nodeDir holds the npm package with a standard EventSource client.
const nodeDir = "testdata/node"

// A report is what the EventSource client saw (see eventsource.mjs).
type report struct {
	Kind     string // open, event, error
	Type, ID string
	Data     string
	State    int // after an error: 0 reconnecting, 2 given up
	Code     int // after an error: the HTTP status, if there was one
	Message  string
}

// openEventSource runs a standard EventSource (npm's eventsource, under
// node) on path of the site and returns what it sees. It ends with the
// test.
func openEventSource(t *testing.T, s *site, path string) <-chan report {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed (./test installs Debian's nodejs)")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "eventsource")); err != nil {
		t.Fatalf("the eventsource package is not installed in %s: run ./test, or npm ci there", nodeDir)
	}
	cmd := exec.Command("node", filepath.Join(nodeDir, "eventsource.mjs"), s.url+path)
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+s.cert.CertFile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reports := make(chan report, 1024)
	go func() {
		defer close(reports)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r report
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("eventsource.mjs wrote %q: %v", sc.Text(), err)
				continue
			}
			reports <- r
		}
	}()
	t.Cleanup(func() {
		stdin.Close() // it closes the EventSource and exits
		for range reports {
		}
		cmd.Wait()
	})
	return reports
}
