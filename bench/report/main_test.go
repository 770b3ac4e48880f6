package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Two servers at one size: the table holds both rows and their ratios,
// and the plot's data file one line per size.
func TestReport(t *testing.T) {
	lines := `{"server":"cometkit","phase":"fanout","transport":"http1","result":{"subscribers":1000,"fanout_p50_ms":120,"fanout_p99_ms":150,"errors":{},"server":{"held_bytes":20480,"cpu_ms_per_10k_deliveries":900}}}
{"server":"cometkit","phase":"steady","transport":"http1","result":{"subscribers":1000,"delivered_fraction":1,"latency_p99_ms":80,"errors":{"503":2},"server":{"cpu_ms_per_10k_deliveries":600}}}
{"server":"naive","phase":"fanout","transport":"http1","result":{"subscribers":1000,"fanout_p50_ms":100,"fanout_p99_ms":100,"errors":{},"server":{"held_bytes":16384,"cpu_ms_per_10k_deliveries":600}}}
{"server":"naive","phase":"steady","transport":"http1","result":{"subscribers":1000,"delivered_fraction":0.5,"latency_p99_ms":90,"errors":{},"server":{"cpu_ms_per_10k_deliveries":800}}}
`
	runs, err := read(strings.NewReader(lines))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, write(runs, dir))

	table, err := os.ReadFile(filepath.Join(dir, "table.md"))
	require.NoError(t, err)
	assert.Contains(t, string(table), "| 1k http1 | cometkit | 20.0 KiB | 120 / 150 ms | 900 / 600 ms | 1.000 (80 ms) | 503: 2 |")
	assert.Contains(t, string(table), "| 1k http1 | naive | 16.0 KiB | 100 / 100 ms | 600 / 800 ms | 0.500 (90 ms) | 0 |")
	assert.Contains(t, string(table), "**1.25×** | **1.20× / 1.50×** | **1.50× / 0.75×**")

	data, err := os.ReadFile(filepath.Join(dir, "plot.dat"))
	require.NoError(t, err)
	assert.Contains(t, string(data), "1000 http1  20.00 16.00  120.0 150.0 100.0 100.0")

	_, err = read(strings.NewReader("not json\n"))
	assert.ErrorContains(t, err, "line 1")
}
