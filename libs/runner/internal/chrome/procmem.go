package chrome

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// RendererMemory is the resident memory, in bytes, of the renderer processes under the
// given browser processes (Chromium's --type=renderer children, where pages run and
// where memory grows), read from /proc. It is 0 where there is no /proc.
func RendererMemory(browsers []int) int64 {
	if len(browsers) == 0 {
		return 0
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	roots := make(map[int]bool, len(browsers))
	for _, pid := range browsers {
		roots[pid] = true
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppid(pid); ok {
			parent[pid] = pp
		}
	}
	page := int64(os.Getpagesize())
	var total int64
	for pid := range parent {
		if !underAny(pid, parent, roots) || !isRenderer(pid) {
			continue
		}
		total += rssPages(pid) * page
	}
	return total
}

// ppid reads a process's parent from /proc/PID/stat (the field after the command's
// closing parenthesis and the state).
func ppid(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

func underAny(pid int, parent map[int]int, roots map[int]bool) bool {
	for range 64 { // a process tree is never this deep; a cycle cannot loop forever
		pp, ok := parent[pid]
		if !ok || pp <= 1 {
			return false
		}
		if roots[pp] {
			return true
		}
		pid = pp
	}
	return false
}

func isRenderer(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte("--type=renderer"))
}

// rssPages reads a process's resident set size, in pages, from /proc/PID/statm.
func rssPages(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n
}
