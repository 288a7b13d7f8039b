package benchmarks

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Summarize condenses rounds into one Summary per record size, in order of
// first appearance. Each figure is the median over the rounds of each mode
// with its min, max and spread; Ratio is the proxied median over the direct
// one, so for throughput below 1 is the proxy's cost and for latency above
// 1 is. Rounds with an Error are left out of the figures (their numbers are
// not to be trusted) but make AllRoundsVerified false. cpus is the number of
// CPUs of the machine, used to tell when all of them were busy.
func Summarize(rounds []Round, cpus int) []Summary {
	var sizes []int
	for _, rd := range rounds {
		if !slices.Contains(sizes, rd.RecordSize) {
			sizes = append(sizes, rd.RecordSize)
		}
	}
	out := make([]Summary, 0, len(sizes))
	for _, size := range sizes {
		s := Summary{RecordSize: size, AllRoundsVerified: true}
		var direct, proxied []Round
		for _, rd := range rounds {
			if rd.RecordSize != size {
				continue
			}
			if !rd.Verified || rd.Error != "" {
				s.AllRoundsVerified = false
				continue
			}
			switch rd.Mode {
			case Direct:
				direct = append(direct, rd)
			case Proxied:
				proxied = append(proxied, rd)
			}
		}
		cmp := func(f func(Round) float64) Compare { return compareOf(direct, proxied, f) }
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		s.ProduceMBPerSec = cmp(func(r Round) float64 { return r.Produce.MBPerSec })
		s.ProduceRecsPerSec = cmp(func(r Round) float64 { return r.Produce.RecordsPerSec })
		s.ConsumeMBPerSec = cmp(func(r Round) float64 { return r.Consume.MBPerSec })
		s.ConsumeRecsPerSec = cmp(func(r Round) float64 { return r.Consume.RecordsPerSec })
		s.LatencyP50Ms = cmp(func(r Round) float64 { return ms(r.Latency.P50) })
		s.LatencyP99Ms = cmp(func(r Round) float64 { return ms(r.Latency.P99) })
		s.LatencyP999Ms = cmp(func(r Round) float64 { return ms(r.Latency.P999) })
		var perGB []float64
		for _, rd := range proxied {
			if rd.ProxyCPUPerGB > 0 {
				perGB = append(perGB, rd.ProxyCPUPerGB)
			}
		}
		s.ProxyCPUPerGB = statOf(perGB)
		s.Saturated = saturated(proxied, cpus)
		out = append(out, s)
	}
	return out
}

// compareOf sets figure f of the direct and proxied rounds side by side.
func compareOf(direct, proxied []Round, f func(Round) float64) Compare {
	vals := func(rs []Round) []float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return v
	}
	c := Compare{Direct: statOf(vals(direct)), Proxied: statOf(vals(proxied))}
	if c.Direct.Median > 0 && len(proxied) > 0 {
		c.Ratio = c.Proxied.Median / c.Direct.Median
	}
	return c
}

// statOf is the median, min, max and spread of v; zero for none.
func statOf(v []float64) Stat {
	var finiteV []float64
	for _, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			finiteV = append(finiteV, x)
		}
	}
	if len(finiteV) == 0 {
		return Stat{}
	}
	s := slices.Clone(finiteV)
	slices.Sort(s)
	st := Stat{Min: s[0], Max: s[len(s)-1]}
	if n := len(s); n%2 == 1 {
		st.Median = s[n/2]
	} else {
		st.Median = (s[n/2-1] + s[n/2]) / 2
	}
	if st.Median != 0 {
		st.Spread = (st.Max - st.Min) / st.Median
	}
	return st
}

// Thresholds of saturatedKind: a process at busyRole of a core or more is
// what limited the round; short of that, the three processes using
// busyMachine of all CPUs between them is; a busiest process under
// busyCore means nothing was near its limit.
const (
	busyRole     = 0.9
	busyMachine  = 0.8
	busyCore     = 0.5
	roleProxy    = "proxy"
	roleBroker   = "broker"
	roleClients  = "clients"
	roleOther    = "other"
	machineLabel = "machine"
	noneLabel    = "none"
)

// roundCores is the CPU each role used in rd over its produce and consume
// time: 1.0 is one core busy throughout.
func roundCores(rd Round) map[string]float64 {
	wall := (rd.Produce.Duration + rd.Consume.Duration).Seconds()
	out := map[string]float64{}
	if wall <= 0 {
		return out
	}
	for role, s := range rd.CPUSeconds {
		out[role] = s / wall
	}
	return out
}

// saturatedKind names what limited one round: the busiest role, "machine"
// when all CPUs were busy between the roles, "none" when nothing was near a
// core (a --rate run), "" when CPU is unknown.
func saturatedKind(cores map[string]float64, cpus int) string {
	if len(cores) == 0 {
		return ""
	}
	var sum, top float64
	kind := ""
	for _, role := range sortedRoles(cores) {
		c := cores[role]
		sum += c
		if c > top {
			top, kind = c, role
		}
	}
	switch {
	case top >= busyRole:
		return kind
	case cpus > 0 && sum >= busyMachine*float64(cpus):
		return machineLabel
	case top < busyCore:
		return noneLabel
	}
	return kind
}

// saturated says what limited the proxied rounds, as "broker (0.97 of a
// core)": the most common answer across rounds, with the median cores.
// kfake serves requests from one goroutine, so a broker near 1.0 core means
// kfake, not the proxy, set the pace.
func saturated(proxied []Round, cpus int) string {
	votes := map[string]int{}
	var kinds []string
	coresByRole := map[string][]float64{}
	for _, rd := range proxied {
		c := roundCores(rd)
		k := saturatedKind(c, cpus)
		if k == "" {
			continue
		}
		if votes[k] == 0 {
			kinds = append(kinds, k)
		}
		votes[k]++
		for role, v := range c {
			coresByRole[role] = append(coresByRole[role], v)
		}
	}
	if len(kinds) == 0 {
		return ""
	}
	sort.SliceStable(kinds, func(i, j int) bool { return votes[kinds[i]] > votes[kinds[j]] })
	k := kinds[0]
	median := map[string]float64{}
	for role, v := range coresByRole {
		median[role] = statOf(v).Median
	}
	all := func() string {
		var parts []string
		roles := sortedRoles(median)
		sort.SliceStable(roles, func(i, j int) bool { return median[roles[i]] > median[roles[j]] })
		for _, role := range roles {
			parts = append(parts, fmt.Sprintf("%s %.2f", role, median[role]))
		}
		return strings.Join(parts, ", ")
	}
	switch k {
	case roleOther:
		return fmt.Sprintf("other load on the machine (%.2f of a core)", median[k])
	case machineLabel:
		return fmt.Sprintf("all %d CPUs (%s of a core)", cpus, all())
	case noneLabel:
		return fmt.Sprintf("none (%s of a core)", all())
	}
	return fmt.Sprintf("%s (%.2f of a core)", k, median[k])
}

// sortedRoles lists the roles of m in a fixed order.
func sortedRoles(m map[string]float64) []string {
	roles := make([]string, 0, len(m))
	for r := range m {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	return roles
}
