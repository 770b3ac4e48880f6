// Command report turns the JSON lines of bench/run.sh into the tables of
// docs/benchmarks.md (cometkit against the naive baseline, with ratios)
// and the data files bench/plot.gp draws. Each server is measured in two
// phases on one process, fan-out then steady, maybe several times (run.sh
// interleaves the repetitions): every figure is the median over them.
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
			IdleRSSBytes  float64 `json:"idle_rss_bytes"`
			HeldBytes     float64 `json:"held_bytes"`
			AfterRSSBytes float64 `json:"after_rss_bytes"`
			CPUMsPer10k   float64 `json:"cpu_ms_per_10k_deliveries"`
		} `json:"server"`
	} `json:"result"`
	Goroutines int `json:"goroutines"` // the server's, every subscriber waiting (0: not counted)
}

// key names one load: the same N over the same transport.
type key struct {
	n         int
	transport string
}

// figures are what the table shows of one server at one load.
type figures struct {
	held, afterFanout, afterSteady float64 // bytes per subscriber
	goroutines                     float64
	fanoutP50, fanoutP99           float64
	cpuFanout, cpuSteady           float64
	delivered, latencyP99          float64
	errors                         map[string]int
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

// read returns the runs by load, then by "server/phase", in the order run
// (the i-th steady run of a server followed its i-th fan-out run, on the
// same process).
func read(r io.Reader) (map[key]map[string][]run, error) {
	runs := map[key]map[string][]run{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var x run
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		k := key{x.Result.Subscribers, x.Transport}
		if runs[k] == nil {
			runs[k] = map[string][]run{}
		}
		runs[k][x.Server+"/"+x.Phase] = append(runs[k][x.Server+"/"+x.Phase], x)
	}
	return runs, sc.Err()
}

// summarize takes the medians of a server's runs at one load.
func summarize(fans, steadies []run) figures {
	f := figures{errors: map[string]int{}}
	var held, afterF, afterS, gor, p50, p99, cpuF, cpuS, deliv, lat []float64
	for i, fan := range fans {
		n := float64(max(fan.Result.Subscribers, 1))
		idle := fan.Result.Server.IdleRSSBytes // the server's before any subscriber; the steady run's own is not
		held = append(held, fan.Result.Server.HeldBytes)
		afterF = append(afterF, (fan.Result.Server.AfterRSSBytes-idle)/n)
		p50, p99 = append(p50, fan.Result.FanoutP50Ms), append(p99, fan.Result.FanoutP99Ms)
		cpuF = append(cpuF, fan.Result.Server.CPUMsPer10k)
		addErrors(f.errors, fan)
		if i < len(steadies) {
			st := steadies[i]
			afterS = append(afterS, (st.Result.Server.AfterRSSBytes-idle)/n)
			cpuS = append(cpuS, st.Result.Server.CPUMsPer10k)
			deliv, lat = append(deliv, st.Result.DeliveredFraction), append(lat, st.Result.LatencyP99Ms)
			if st.Goroutines > 0 {
				gor = append(gor, float64(st.Goroutines))
			}
			addErrors(f.errors, st)
		}
	}
	f.held, f.afterFanout, f.afterSteady, f.goroutines = median(held), median(afterF), median(afterS), median(gor)
	f.fanoutP50, f.fanoutP99, f.cpuFanout, f.cpuSteady = median(p50), median(p99), median(cpuF), median(cpuS)
	f.delivered, f.latencyP99 = median(deliv), median(lat)
	return f
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Sorted(slices.Values(xs))
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

func addErrors(total map[string]int, r run) {
	for kind, n := range r.Result.Errors {
		total[kind] += n
	}
}

func write(runs map[key]map[string][]run, dir string) error {
	keys := slices.SortedFunc(maps.Keys(runs), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.n, b.n), strings.Compare(a.transport, b.transport))
	})
	var table, data strings.Builder
	fmt.Fprintln(&table, "| held, transport | server | memory per held | per client after the traffic (fan-out / steady) | goroutines, all waiting | fan-out p50 / p99 | CPU per 10k deliveries (fan-out / steady) | delivered at 200 ms (latency p99) | errors |")
	fmt.Fprintln(&table, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Fprintln(&data, "# n transport  ck_held_kib naive_held_kib  ck_fanout_p50 ck_fanout_p99 naive_fanout_p50 naive_fanout_p99")
	for _, k := range keys {
		r := runs[k]
		fs := map[string]figures{}
		for _, server := range []string{"cometkit", "naive"} {
			f := summarize(r[server+"/fanout"], r[server+"/steady"])
			fs[server] = f
			fmt.Fprintf(&table, "| %s %s | %s | %.1f KiB | %.1f / %.1f KiB | %s | %.0f / %.0f ms | %.0f / %.0f ms | %.3f (%.0f ms) | %s |\n",
				count(k.n), k.transport, server, f.held/1024, f.afterFanout/1024, f.afterSteady/1024, goroutines(f.goroutines),
				f.fanoutP50, f.fanoutP99, f.cpuFanout, f.cpuSteady, f.delivered, f.latencyP99, errs(f.errors))
		}
		ck, nv := fs["cometkit"], fs["naive"]
		fmt.Fprintf(&table, "| | **ratio** | **%s** | **%s / %s** | | **%s / %s** | **%s / %s** | | |\n",
			ratio(ck.held, nv.held), ratio(ck.afterFanout, nv.afterFanout), ratio(ck.afterSteady, nv.afterSteady),
			ratio(ck.fanoutP50, nv.fanoutP50), ratio(ck.fanoutP99, nv.fanoutP99),
			ratio(ck.cpuFanout, nv.cpuFanout), ratio(ck.cpuSteady, nv.cpuSteady))
		fmt.Fprintf(&data, "%d %s  %.2f %.2f  %.1f %.1f %.1f %.1f\n", k.n, k.transport,
			ck.held/1024, nv.held/1024, ck.fanoutP50, ck.fanoutP99, nv.fanoutP50, nv.fanoutP99)
	}
	if err := os.WriteFile(filepath.Join(dir, "table.md"), []byte(table.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "plot.dat"), []byte(data.String()), 0o644)
}

func goroutines(n float64) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", n)
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

// errs lists errors by kind.
func errs(total map[string]int) string {
	if len(total) == 0 {
		return "0"
	}
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(total)) {
		parts = append(parts, fmt.Sprintf("%s: %d", kind, total[kind]))
	}
	return strings.Join(parts, ", ")
}
