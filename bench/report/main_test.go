package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// report reads the runs of lines and writes the report, and returns its
// table and its plot's data file.
func report(t *testing.T, lines string) (table, plot []byte) {
	t.Helper()
	runs, err := read(strings.NewReader(lines))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, write(runs, dir))
	table, err = os.ReadFile(filepath.Join(dir, "table.md"))
	require.NoError(t, err)
	plot, err = os.ReadFile(filepath.Join(dir, "plot.dat"))
	require.NoError(t, err)
	return table, plot
}

// Two servers at one size: the table holds both rows and their ratios,
// and the plot's data file one line per size.
func TestReport(t *testing.T) {
	lines := `{"server":"cometkit","phase":"fanout","transport":"http1","result":{"subscribers":1000,"fanout_p50_ms":120,"fanout_p99_ms":150,"errors":{},"server":{"held_bytes":20480,"cpu_ms_per_10k_deliveries":900,"idle_rss_bytes":2048000,"after_rss_bytes":4096000}}}
{"server":"cometkit","phase":"steady","transport":"http1","goroutines":12,"result":{"subscribers":1000,"delivered_fraction":1,"latency_p99_ms":80,"errors":{"503":2},"server":{"cpu_ms_per_10k_deliveries":600,"idle_rss_bytes":1024000,"after_rss_bytes":5120000}}}
{"server":"naive","phase":"fanout","transport":"http1","result":{"subscribers":1000,"fanout_p50_ms":100,"fanout_p99_ms":100,"errors":{},"server":{"held_bytes":16384,"cpu_ms_per_10k_deliveries":600,"idle_rss_bytes":1024000,"after_rss_bytes":5120000}}}
{"server":"naive","phase":"steady","transport":"http1","goroutines":2004,"result":{"subscribers":1000,"delivered_fraction":0.5,"latency_p99_ms":90,"errors":{},"server":{"cpu_ms_per_10k_deliveries":800,"idle_rss_bytes":5000000,"after_rss_bytes":9216000}}}
`
	table, data := report(t, lines)
	// After the traffic: RSS less the RSS before the fan-out phase, per
	// subscriber (the steady phase's own idle reading is not idle).
	assert.Contains(t, string(table), "| 1k http1 | cometkit | 20.0 KiB | 2.0 / 3.0 KiB | 12 | 120 / 150 ms | 900 / 600 ms | 1.000 (80 ms) | 503: 2 |")
	assert.Contains(t, string(table), "| 1k http1 | naive | 16.0 KiB | 4.0 / 8.0 KiB | 2004 | 100 / 100 ms | 600 / 800 ms | 0.500 (90 ms) | 0 |")
	assert.Contains(t, string(table), "**1.25×** | **0.50× / 0.38×** | | **1.20× / 1.50×** | **1.50× / 0.75×**")
	assert.Contains(t, string(data), "1000 http1  20.00 16.00  120.0 150.0 100.0 100.0")

	_, err := read(strings.NewReader("not json\n"))
	assert.ErrorContains(t, err, "line 1")
}

// Repeated runs: each figure is the median of the repetitions, and the
// memory after the steady phase counts from the idle RSS of the fan-out
// run that came before it on the same process.
func TestReportMedians(t *testing.T) {
	var lines strings.Builder
	for i, cpu := range []int{300, 900, 500} {
		idle := 1000000 * (i + 1)
		fmt.Fprintf(&lines, `{"server":"cometkit","phase":"fanout","transport":"http1","result":{"subscribers":1000,"fanout_p50_ms":%d,"errors":{"eof":1},"server":{"held_bytes":%d,"cpu_ms_per_10k_deliveries":%d,"idle_rss_bytes":%d,"after_rss_bytes":%d}}}`+"\n",
			cpu/10, 1024*(i+1), cpu, idle, idle+2048000)
		fmt.Fprintf(&lines, `{"server":"cometkit","phase":"steady","transport":"http1","goroutines":%d,"result":{"subscribers":1000,"server":{"cpu_ms_per_10k_deliveries":%d,"idle_rss_bytes":99999999,"after_rss_bytes":%d}}}`+"\n",
			10+i, cpu/2, idle+3072000)
	}
	for range 2 {
		lines.WriteString(`{"server":"naive","phase":"fanout","transport":"http1","result":{"subscribers":1000,"fanout_p50_ms":50,"server":{"held_bytes":2048,"cpu_ms_per_10k_deliveries":250,"idle_rss_bytes":1000000,"after_rss_bytes":5096000}}}` + "\n")
		lines.WriteString(`{"server":"naive","phase":"steady","transport":"http1","goroutines":2000,"result":{"subscribers":1000,"server":{"cpu_ms_per_10k_deliveries":200,"after_rss_bytes":5096000}}}` + "\n")
	}
	table, _ := report(t, lines.String())
	assert.Contains(t, string(table), "| 1k http1 | cometkit | 2.0 KiB | 2.0 / 3.0 KiB | 11 | 50 / 0 ms | 500 / 250 ms | 0.000 (0 ms) | eof: 3 |")
	assert.Contains(t, string(table), "| 1k http1 | naive | 2.0 KiB | 4.0 / 4.0 KiB | 2000 | 50 / 0 ms | 250 / 200 ms |")
	assert.Contains(t, string(table), "**1.00×** | **0.50× / 0.75×** | | **1.00× / –** | **2.00× / 1.25×**")
}
