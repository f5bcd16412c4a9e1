// Package sim is nr-sim's engine: a fleet of simulated agent nodes that
// publish JSON events over MQTT v5 at a paced rate, answer the commands sent
// to them, and measure publish latency. cmd/nr-sim is a thin flag layer over
// Run; Go tests call Run directly.
package sim

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// Config describes one simulation run. Start from DefaultConfig, which
// holds every default, and change what you need; Run uses the fields as
// they are (only RunID, ClientPrefix and Logger are filled in when empty).
type Config struct {
	// URL is the broker, tcp:// (or mqtt://) or ssl:// (tls://, mqtts://).
	// Default tcp://127.0.0.1:1883.
	URL string
	// Username and Password are sent in CONNECT when set.
	Username, Password string
	// TLS is the client TLS configuration of an ssl:// (tls://, mqtts://)
	// URL: CA bundle, client certificate. Nil: TLS 1.2 or later against
	// the system roots. Ignored for tcp://.
	TLS *tls.Config

	// Orgs is the number of organizations, at least 1 (default 1). Org 1 is
	// named OrgPrefix, org k > 1 OrgPrefix+k: demo, demo2, demo3 ...
	Orgs int
	// OrgPrefix names the orgs (default "demo").
	OrgPrefix string
	// Nodes is the total number of nodes across all orgs, not per org
	// (default 10). Node i (0-based) belongs to org i mod Orgs and is named
	// n<i/Orgs+1>, so the orgs get the same number of nodes (give or take
	// one), each starting at n1.
	Nodes int

	// Rate is events per second per node (default 1; fractions allowed; 0
	// sends no events, the fleet only answers commands).
	Rate float64
	// Size is the approximate event payload size in bytes: the JSON event
	// is padded with a "pad" field up to it (default 256). Below the
	// unpadded size (about 180 bytes) events are sent unpadded.
	Size int
	// QoS of events and replies, 0 or 1 (default 1).
	QoS byte

	// Duration ends the run after this long (default 0: no limit, run until
	// ctx ends). With Count, the fleet stops sending after Count events per
	// node and keeps answering commands until Duration.
	Duration time.Duration
	// Count is the number of events each node sends (default 0: no limit).
	// Without Duration the run ends once every event is acknowledged.
	Count int

	// Conns is the number of MQTT connections; nodes are spread over them
	// round-robin (default 4; more than Nodes is reduced to Nodes).
	Conns int
	// Inflight is the number of publishes each connection keeps in flight
	// (default 32). The broker's own limit (the Receive Maximum in its
	// CONNACK: Mosquitto max_inflight_messages, default 20) also applies;
	// time spent waiting for it counts in the publish latency.
	Inflight int
	// ReplyFraction is the fraction of nodes (0 to 1) that answer commands
	// (default 1); the others receive commands and stay silent, like
	// offline agents. Answering nodes are spread evenly over the fleet, and
	// node 0 (the first org's n1) answers whenever ReplyFraction > 0.
	ReplyFraction float64

	// RunID prefixes every msg_id (<run>.<org>.<node>.<seq>), so that runs
	// within the backbone's deduplication window do not collide. Default
	// (when empty): 8 random hex digits.
	RunID string
	// ClientPrefix prefixes the MQTT client IDs, <prefix>-<k> with k from 1.
	// Default (when empty): nr-sim-<RunID>.
	ClientPrefix string

	// Progress is how often a progress line is logged (default 5s; 0 turns
	// it off).
	Progress time.Duration
	// PublishTimeout bounds one publish waiting for its PUBACK (default 10s).
	PublishTimeout time.Duration
	// ConnectTimeout bounds waiting for the whole fleet to connect and
	// subscribe at the start (default 15s); Run fails after it.
	ConnectTimeout time.Duration

	// Logger receives progress and connection logs; nil discards them.
	Logger *slog.Logger
	// OnReady, when set, is called once every connection is up and
	// subscribed, just before the first event.
	OnReady func()
}

// DefaultConfig returns the defaults, as documented on each field.
func DefaultConfig() Config {
	return Config{
		URL:            "tcp://127.0.0.1:1883",
		Orgs:           1,
		OrgPrefix:      "demo",
		Nodes:          10,
		Rate:           1,
		Size:           256,
		QoS:            1,
		Conns:          4,
		Inflight:       32,
		ReplyFraction:  1,
		Progress:       5 * time.Second,
		PublishTimeout: 10 * time.Second,
		ConnectTimeout: 15 * time.Second,
	}
}

// withGenerated fills the fields that are generated when empty and caps
// Conns at Nodes.
func (c Config) withGenerated() Config {
	if c.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.RunID = hex.EncodeToString(b[:])
	}
	if c.ClientPrefix == "" {
		c.ClientPrefix = "nr-sim-" + c.RunID
	}
	if c.Conns > c.Nodes && c.Nodes > 0 {
		c.Conns = c.Nodes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrConfig is wrapped by every error Run returns for a bad Config.
var ErrConfig = errors.New("invalid nr-sim configuration")

// validate checks the values; errors name the nr-sim flag.
func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return bad("-url %q: want scheme://host:port, e.g. tcp://127.0.0.1:1883", redact.URLs(c.URL))
	}
	switch strings.ToLower(u.Scheme) {
	case "tcp", "mqtt", "ssl", "tls", "mqtts":
	default:
		return bad("-url %q: scheme must be tcp, mqtt, ssl, tls or mqtts", redact.URLs(c.URL))
	}
	switch {
	case c.Orgs < 1 || c.Orgs > 100000:
		return bad("-orgs must be between 1 and 100000, got %d", c.Orgs)
	case c.Nodes < c.Orgs || c.Nodes > 10000000:
		return bad("-nodes must be between -orgs (%d) and 10000000, got %d", c.Orgs, c.Nodes)
	case !bridge.ValidID(c.OrgPrefix) || len(c.OrgPrefix)+6 > bridge.MaxIDLen:
		return bad("-org-prefix %q: want up to %d characters of A-Z a-z 0-9 _ -", c.OrgPrefix, bridge.MaxIDLen-6)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return bad("-rate must be >= 0, got %v", c.Rate)
	case c.QoS > 1:
		return bad("-qos must be 0 or 1, got %d", c.QoS)
	case c.Size < 0 || c.Size > 16<<20:
		return bad("-size must be between 0 and 16 MiB, got %d", c.Size)
	case c.Count < 0:
		return bad("-count must be >= 0, got %d", c.Count)
	case c.Duration < 0:
		return bad("-duration must be >= 0, got %s", c.Duration)
	case c.Conns < 1 || c.Conns > 10000:
		return bad("-conns must be between 1 and 10000, got %d", c.Conns)
	case c.Inflight < 1 || c.Inflight > 65535:
		return bad("-inflight must be between 1 and 65535, got %d", c.Inflight)
	case c.ReplyFraction < 0 || c.ReplyFraction > 1 || math.IsNaN(c.ReplyFraction):
		return bad("-reply-fraction must be between 0 and 1, got %v", c.ReplyFraction)
	case c.RunID == "" || strings.ContainsAny(c.RunID, " \t\r\n.*>+#/"):
		return bad("-run-id %q: must be non-empty without spaces, dots, wildcards or /", c.RunID)
	case c.ClientPrefix == "" || strings.ContainsAny(c.ClientPrefix, " +#/"):
		return bad("-client-prefix %q: must be non-empty without spaces, + # /", c.ClientPrefix)
	case c.Progress < 0:
		return bad("-progress must be >= 0, got %s", c.Progress)
	case c.PublishTimeout <= 0 || c.ConnectTimeout <= 0:
		return bad("-publish-timeout and -connect-timeout must be > 0")
	}
	return nil
}

// node is one simulated agent.
type node struct {
	org, id string
	topic   string // org/<org>/node/<id>/events
	answers bool   // replies to commands
	index   int    // 0-based position in the fleet
}

// fleet lays out the nodes as documented on Config.Nodes and
// Config.ReplyFraction.
func (c *Config) fleet() []*node {
	answering := int(math.Round(c.ReplyFraction * float64(c.Nodes)))
	if c.ReplyFraction > 0 && answering == 0 {
		answering = 1
	}
	ceilDiv := func(a, b int) int { return (a + b - 1) / b }
	nodes := make([]*node, c.Nodes)
	for i := range nodes {
		org := c.OrgPrefix
		if k := i % c.Orgs; k > 0 {
			org = fmt.Sprintf("%s%d", c.OrgPrefix, k+1)
		}
		id := fmt.Sprintf("n%d", i/c.Orgs+1)
		nodes[i] = &node{
			org:   org,
			id:    id,
			topic: "org/" + org + "/node/" + id + "/events",
			// Node i answers when the running count ceil(i*A/N) steps up at
			// i: exactly A nodes, evenly spread, node 0 included.
			answers: ceilDiv((i+1)*answering, c.Nodes) > ceilDiv(i*answering, c.Nodes),
			index:   i,
		}
	}
	return nodes
}
