//go:build !linux

package benchmarks

import "syscall"

// procCPU is unknown off Linux: the report then lacks proxy and broker CPU.
func procCPU(int) cpuReading { return cpuReading{} }

// machineCPU is unknown off Linux: the report then lacks other load.
func machineCPU() cpuReading { return cpuReading{} }

// childProcAttr has no parent-death signal off Linux; the harness still
// stops its children on every exit path it controls.
func childProcAttr() *syscall.SysProcAttr { return nil }
