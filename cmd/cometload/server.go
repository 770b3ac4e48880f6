package main

import (
	"fmt"
	"os"
	"strings"
)

// serverUsage is the server process's memory and CPU during a run, read
// from /proc: the server must run on this machine (it does: loopback only).
type serverUsage struct {
	pid int

	IdleRSSBytes   int64   `json:"idle_rss_bytes"`   // before any subscriber connected
	LoadedRSSBytes int64   `json:"loaded_rss_bytes"` // with every subscriber waiting
	HeldBytes      float64 `json:"held_bytes"`       // (loaded − idle) / waiting subscribers
	CPUSeconds     float64 `json:"cpu_seconds"`      // user + system, from the first publish to the last delivery
	CPUMsPer10k    float64 `json:"cpu_ms_per_10k_deliveries"`
	AfterRSSBytes  int64   `json:"after_rss_bytes"` // after the publishing, every subscriber waiting again
	AfterBytes     float64 `json:"after_bytes"`     // (after − idle) / subscribers waiting then

	waiting  int
	cpuStart float64
}

func startUsage(pid int) (*serverUsage, error) {
	u := &serverUsage{pid: pid}
	var err error
	u.IdleRSSBytes, err = residentBytes(pid)
	return u, err
}

// loaded reads the memory with the subscribers waiting and starts the CPU
// count.
func (u *serverUsage) loaded() error {
	var err error
	if u.LoadedRSSBytes, err = residentBytes(u.pid); err != nil {
		return err
	}
	u.cpuStart, err = cpuSeconds(u.pid)
	return err
}

func (u *serverUsage) finished() error {
	end, err := cpuSeconds(u.pid)
	u.CPUSeconds = end - u.cpuStart
	return err
}

// after reads the memory once the publishing is over and waiting
// subscribers are waiting again: what the traffic left behind.
func (u *serverUsage) after(waiting int) error {
	var err error
	if u.AfterRSSBytes, err = residentBytes(u.pid); err == nil && waiting > 0 {
		u.AfterBytes = float64(u.AfterRSSBytes-u.IdleRSSBytes) / float64(waiting)
	}
	return err
}

func (u *serverUsage) perDelivery(delivered int) {
	if delivered > 0 {
		u.CPUMsPer10k = u.CPUSeconds * 1000 / float64(delivered) * 10000
	}
}

func (u *serverUsage) held(waiting int) {
	if waiting > 0 {
		u.HeldBytes = float64(u.LoadedRSSBytes-u.IdleRSSBytes) / float64(waiting)
	}
}

// residentBytes reads a process's resident set size.
func residentBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		var kb int64
		if n, _ := fmt.Sscanf(line, "VmRSS: %d kB", &kb); n == 1 {
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTicks is Linux's USER_HZ, the unit of /proc/PID/stat's CPU times; it
// is 100 on every architecture Go supports on Linux.
const clockTicks = 100

// cpuSeconds reads a process's user and system CPU time.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it
	// start after its closing parenthesis. utime and stime are fields 14
	// and 15, so the 12th and 13th after the name.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var utime, stime int64
	fmt.Sscan(fields[11], &utime)
	fmt.Sscan(fields[12], &stime)
	return float64(utime+stime) / clockTicks, nil
}
