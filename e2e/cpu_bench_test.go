package e2e

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTimes is the CPU time spent so far by this process (the services, NATS, the
// portal and the bench's own clients, all in-process), by the tree of one child
// process (a browser the bench started itself) and by its other child processes still
// running (the runner's browsers, redis-server), read from getrusage and /proc.
type cpuTimes struct{ self, tree, children time.Duration }

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

func readCPU(root int) cpuTimes {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t := cpuTimes{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	parent := map[int]int{}
	ticks := map[int]int64{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command name, which may hold spaces and parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		parent[pid], ticks[pid] = ppid, ut+st
	}
	self := os.Getpid()
	for pid, n := range ticks {
		inTree := pid == root
		for p, hops := parent[pid], 0; p != 0 && hops < 16; p, hops = parent[p], hops+1 {
			inTree = inTree || p == root
			if p == self {
				if inTree {
					t.tree += time.Duration(n) * clockTick
				} else {
					t.children += time.Duration(n) * clockTick
				}
				break
			}
		}
	}
	return t
}

func (t cpuTimes) sub(u cpuTimes) cpuTimes {
	return cpuTimes{self: t.self - u.self, tree: t.tree - u.tree, children: t.children - u.children}
}

func (t cpuTimes) add(u cpuTimes) cpuTimes {
	return cpuTimes{self: t.self + u.self, tree: t.tree + u.tree, children: t.children + u.children}
}
