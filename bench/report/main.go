// Command report turns the JSON lines of bench/run.sh into the tables of
// docs/benchmarks.md (cometkit against the naive baseline, with ratios)
// and the data files bench/plot.gp draws.
//
//	go run ./bench/report -in bench/results/results.jsonl -out bench/results
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// run is one cometload run, as bench/run.sh records it.
type run struct {
	Server    string `json:"server"` // "cometkit" or "naive"
	Phase     string `json:"phase"`  // "fanout" (lockstep rounds) or "steady" (a publish every 200 ms)
	Transport string `json:"transport"`
	Result    struct {
		Subscribers       int            `json:"subscribers"`
		Waiting           int            `json:"waiting"`
		Published         int            `json:"published"`
		DeliveredFraction float64        `json:"delivered_fraction"`
		Duplicates        int            `json:"duplicates"`
		LatencyP99Ms      float64        `json:"latency_p99_ms"`
		FanoutP50Ms       float64        `json:"fanout_p50_ms"`
		FanoutP99Ms       float64        `json:"fanout_p99_ms"`
		Errors            map[string]int `json:"errors"`
		Server            struct {
			HeldBytes   float64 `json:"held_bytes"`
			CPUMsPer10k float64 `json:"cpu_ms_per_10k_deliveries"`
		} `json:"server"`
	} `json:"result"`
}

// key names one load: the same N over the same transport.
type key struct {
	n         int
	transport string
}

func main() {
	in := flag.String("in", "bench/results/results.jsonl", "JSON lines written by bench/run.sh")
	out := flag.String("out", "bench/results", "directory for table.md and the plot's data files")
	flag.Parse()
	f, err := os.Open(*in)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	runs, err := read(f)
	if err != nil {
		fail(err)
	}
	if err := write(runs, *out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "report:", err)
	os.Exit(1)
}

func read(r io.Reader) (map[key]map[string]run, error) {
	runs := map[key]map[string]run{} // load → "server/phase" → run
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var x run
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		k := key{x.Result.Subscribers, x.Transport}
		if runs[k] == nil {
			runs[k] = map[string]run{}
		}
		runs[k][x.Server+"/"+x.Phase] = x
	}
	return runs, sc.Err()
}

func write(runs map[key]map[string]run, dir string) error {
	keys := make([]key, 0, len(runs))
	for k := range runs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.n, b.n), strings.Compare(a.transport, b.transport)) })

	var table, data strings.Builder
	fmt.Fprintln(&table, "| held, transport | server | memory per held | fan-out p50 / p99 | CPU per 10k deliveries (fan-out / steady) | delivered at 200 ms (latency p99) | errors |")
	fmt.Fprintln(&table, "|---|---|---:|---:|---:|---:|---:|")
	fmt.Fprintln(&data, "# n transport  ck_held_kib naive_held_kib  ck_fanout_p50 ck_fanout_p99 naive_fanout_p50 naive_fanout_p99")
	for _, k := range keys {
		r := runs[k]
		for _, server := range []string{"cometkit", "naive"} {
			fan, steady := r[server+"/fanout"], r[server+"/steady"]
			fmt.Fprintf(&table, "| %s %s | %s | %.1f KiB | %.0f / %.0f ms | %.0f / %.0f ms | %.3f (%.0f ms) | %s |\n",
				count(k.n), k.transport, server, fan.Result.Server.HeldBytes/1024,
				fan.Result.FanoutP50Ms, fan.Result.FanoutP99Ms,
				fan.Result.Server.CPUMsPer10k, steady.Result.Server.CPUMsPer10k,
				steady.Result.DeliveredFraction, steady.Result.LatencyP99Ms, errs(fan, steady))
		}
		ck, nv := r["cometkit/fanout"], r["naive/fanout"]
		cks, nvs := r["cometkit/steady"], r["naive/steady"]
		fmt.Fprintf(&table, "| | **ratio** | **%s** | **%s / %s** | **%s / %s** | | |\n",
			ratio(ck.Result.Server.HeldBytes, nv.Result.Server.HeldBytes),
			ratio(ck.Result.FanoutP50Ms, nv.Result.FanoutP50Ms), ratio(ck.Result.FanoutP99Ms, nv.Result.FanoutP99Ms),
			ratio(ck.Result.Server.CPUMsPer10k, nv.Result.Server.CPUMsPer10k), ratio(cks.Result.Server.CPUMsPer10k, nvs.Result.Server.CPUMsPer10k))
		fmt.Fprintf(&data, "%d %s  %.2f %.2f  %.1f %.1f %.1f %.1f\n", k.n, k.transport,
			ck.Result.Server.HeldBytes/1024, nv.Result.Server.HeldBytes/1024,
			ck.Result.FanoutP50Ms, ck.Result.FanoutP99Ms, nv.Result.FanoutP50Ms, nv.Result.FanoutP99Ms)
	}
	if err := os.WriteFile(filepath.Join(dir, "table.md"), []byte(table.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "plot.dat"), []byte(data.String()), 0o644)
}

func count(n int) string {
	if n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// errs sums the errors of both phases, by kind.
func errs(runs ...run) string {
	total := map[string]int{}
	for _, r := range runs {
		for kind, n := range r.Result.Errors {
			total[kind] += n
		}
	}
	if len(total) == 0 {
		return "0"
	}
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(total)) {
		parts = append(parts, fmt.Sprintf("%s: %d", kind, total[kind]))
	}
	return strings.Join(parts, ", ")
}
