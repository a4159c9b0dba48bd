package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports, and getconf CLK_TCK
// prints it; reading it at run time would need cgo.
const clockTicks = 100

// ProcSample is a reading of a process's resident memory and CPU time.
type ProcSample struct {
	At time.Time
	// RSS is VmRSS from /proc/<pid>/status, in bytes.
	RSS int64
	// CPU is user plus system time from /proc/<pid>/stat.
	CPU time.Duration
}

// readProc samples process pid. pid 0 means this process.
func readProc(pid int) (ProcSample, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	sample := ProcSample{At: time.Now()}

	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return sample, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	sample.RSS, err = statusKiB(status, "VmRSS:")
	if err != nil {
		return sample, fmt.Errorf("process %d: %w", pid, err)
	}

	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return sample, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	sample.CPU, err = statCPU(stat)
	if err != nil {
		return sample, fmt.Errorf("process %d: %w", pid, err)
	}
	return sample, nil
}

// statusKiB returns the value of a "Name:   1234 kB" line of
// /proc/<pid>/status in bytes.
func statusKiB(status []byte, name string) (int64, error) {
	scanner := bufio.NewScanner(bytes.NewReader(status))
	for scanner.Scan() {
		value, found := strings.CutPrefix(scanner.Text(), name)
		if !found {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid %s line %q", name, scanner.Text())
		}
		return kib << 10, nil
	}
	return 0, fmt.Errorf("no %s line in /proc status", name)
}

// statCPU returns utime plus stime, fields 14 and 15 of /proc/<pid>/stat
// (proc(5)). The command name in field 2 can contain spaces and
// parentheses, so fields are counted from the last closing parenthesis.
func statCPU(stat []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("invalid /proc stat %q", stat)
	}
	// fields[0] is field 3, the state.
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("invalid /proc stat: %d fields after the command name", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid CPU time %q in /proc stat", f)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
