package benchmarks

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procCPU reads the CPU time of process pid from /proc.
func procCPU(pid int) cpuReading {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return cpuReading{}
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, so 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return cpuReading{}
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return cpuReading{}
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return cpuReading{}
	}
	return cpuReading{ok: true, coarse: float64(utime+stime) / clockTicks, fine: threadsCPU(pid)}
}

// machineCPU reads the busy time of all CPUs together from /proc/stat:
// user, nice, system, irq, softirq and steal (time the hypervisor gave to
// others), in seconds.
func machineCPU() cpuReading {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuReading{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuReading{}
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return cpuReading{}
		}
		ticks += v
	}
	t := float64(ticks) / clockTicks
	return cpuReading{ok: true, coarse: t, fine: -1}
}

// threadsCPU sums the nanoseconds on CPU of the live threads of pid
// (/proc/<pid>/task/*/schedstat, first field), or -1.
func threadsCPU(pid int) float64 {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	var ns uint64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited meanwhile
		}
		f, _, _ := strings.Cut(string(b), " ")
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return -1
		}
		ns += v
	}
	return float64(ns) / 1e9
}

// childProcAttr makes a child die with this process (Pdeathsig), so an
// interrupted or crashed run leaves no broker or proxy behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
