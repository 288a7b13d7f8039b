package policy

import (
	"strconv"

	"gopkg.in/yaml.v3"
)

// FlightQuota is one entry of the policy's flight_quotas list: the caps on
// one principal's Arrow Flight data streams (DoGet, DoPut, DoExchange).
// Zero means no cap.
type FlightQuota struct {
	// Principal is "User:alice", or "User:*" for every principal without
	// an entry of its own.
	Principal string
	Pos       Pos
	// MaxStreams caps the data streams open at once.
	MaxStreams int
	// BytesPerSecond caps the Flight data bytes of all the principal's
	// streams together.
	BytesPerSecond int64
}

// maxQuotaRate bounds bytes_per_second (1 PiB/s), so that nothing
// overflows when the proxy turns it into a budget.
const maxQuotaRate = 1 << 50

// FlightQuota returns the quota of principal: its own entry, else the
// "User:*" entry; ok is false when neither exists.
func (p *Policy) FlightQuota(principal string) (FlightQuota, bool) {
	if q, ok := p.flightQuotas[principal]; ok {
		return q, true
	}
	q, ok := p.flightQuotas["User:"+Wildcard]
	return q, ok
}

// FlightQuotas returns the flight_quotas entries in file order.
func (p *Policy) FlightQuotas() []FlightQuota { return p.flightQuotaList }

// flightQuotas parses the flight_quotas list.
func (p *parser) flightQuotas(n *yaml.Node) []FlightQuota {
	var out []FlightQuota
	seen := map[string]int{}
	p.seq(n, "flight_quotas", func(e *yaml.Node) {
		q := FlightQuota{Pos: Pos{e.Line, e.Column}}
		bad := len(p.issues)
		var limits int
		p.mapping(e, "flight quota", func(key string, k, v *yaml.Node) bool {
			switch key {
			case "principal":
				q.Principal = p.str(v, "principal")
				if q.Principal == "" {
					break
				}
				if err := checkPrincipal(q.Principal, true); err != "" {
					p.add(v, "principal %q: %s", q.Principal, err)
				} else if line, dup := seen[q.Principal]; dup {
					p.add(v, "flight quota for %s is given twice (first at line %d)", q.Principal, line)
				} else {
					seen[q.Principal] = v.Line
				}
			case "max_streams":
				limits++
				s := p.str(v, key)
				n, err := strconv.Atoi(s)
				if s != "" && (err != nil || n < 0 || n > 1<<30) {
					p.add(v, "max_streams %q: want a whole number of streams, 0 for no cap", s)
					n = 0
				}
				q.MaxStreams = n
			case "bytes_per_second":
				limits++
				s := p.str(v, key)
				n, err := ParseBytes(s)
				switch {
				case s == "":
				case err != nil:
					p.add(v, "bytes_per_second %q: want bytes (1048576) or a size with KiB, MiB, GiB (200MiB), 0 for no cap", s)
				case n > maxQuotaRate:
					p.add(v, "bytes_per_second %q is more than 1 PiB/s; use 0 for no cap", s)
				}
				q.BytesPerSecond = n
			default:
				return false
			}
			return true
		})
		if e.Kind != yaml.MappingNode {
			return
		}
		if !hasKey(e, "principal") {
			p.add(e, "flight quota is missing principal (User:name, or User:* for everyone else)")
		}
		if limits == 0 {
			p.add(e, "flight quota sets nothing: give max_streams, bytes_per_second or both")
		}
		if len(p.issues) == bad {
			out = append(out, q)
		}
	})
	return out
}
