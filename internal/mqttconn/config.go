package mqttconn

import (
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/redact"
	"github.com/nr-bridge/nr-bridge/internal/tlsfiles"
)

// Config is the MQTT side of the bridge: the broker, the identity and the
// session every connection (workers and the command publisher) uses. Field
// defaults are in the envDefault tags; DefaultClientID fills ClientID.
type Config struct {
	URL      string `env:"MQTT_URL" envDefault:"tcp://localhost:1883" desc:"broker URL: tcp:// (or mqtt://) for plain TCP, ssl:// (or tls://, mqtts://) for TLS; user:password@ in it is sent in CONNECT like MQTT_USERNAME/MQTT_PASSWORD (not both)"`
	ClientID string `env:"MQTT_CLIENT_ID" desc:"base client ID; workers use <id>-w<n>, the command publisher <id>-pub. Must be stable per replica and unique across replicas (default nr-control-<hostname>)"`
	Username string `env:"MQTT_USERNAME" desc:"username for CONNECT"`
	Password string `env:"MQTT_PASSWORD" desc:"password for CONNECT" secret:"true"`
	CAFile   string `env:"MQTT_CA_FILE" desc:"PEM CA bundle that signs the broker's certificate (default: system roots)"`
	CertFile string `env:"MQTT_CERT_FILE" desc:"PEM client certificate for mTLS (with MQTT_KEY_FILE)"`
	KeyFile  string `env:"MQTT_KEY_FILE" desc:"PEM client key for mTLS (with MQTT_CERT_FILE)"`
	OrgID    string `env:"ORG_ID" desc:"scope the bridge to one organization: subscribe to org/<ORG_ID>/... only and refuse commands for other orgs"`

	ShareGroup     string        `env:"MQTT_SHARE_GROUP" envDefault:"nr-listeners" desc:"shared subscription group every replica's workers join"`
	Workers        int           `env:"MQTT_WORKERS" envDefault:"2" desc:"worker connections per replica (1 to 64)"`
	SessionExpiry  time.Duration `env:"MQTT_SESSION_EXPIRY" envDefault:"10m" desc:"how long the broker keeps a disconnected worker's session and its queued share of messages (0 to 136y; 0 = session ends at disconnect)"`
	KeepAlive      time.Duration `env:"MQTT_KEEPALIVE" envDefault:"30s" desc:"MQTT keepalive"`
	ConnectTimeout time.Duration `env:"MQTT_CONNECT_TIMEOUT" envDefault:"10s" desc:"timeout of one connection attempt"`
	ReconnectMin   time.Duration `env:"MQTT_RECONNECT_MIN" envDefault:"500ms" desc:"first reconnect delay (never zero), doubled per failed attempt"`
	ReconnectMax   time.Duration `env:"MQTT_RECONNECT_MAX" envDefault:"5s" desc:"longest reconnect delay; short, because until a worker is back and subscribed the broker discards events as no-subscriber (Mosquitto does not persist shared subscriptions)"`
	MaxInflight    int           `env:"MQTT_MAX_INFLIGHT" envDefault:"1000" desc:"un-acked messages a worker holds at most; what the broker may send beyond them (MQTT_RECEIVE_MAXIMUM) waits unread"`
	AckInterval    time.Duration `env:"MQTT_ACK_INTERVAL" envDefault:"10ms" desc:"how often a worker sends the PUBACKs of written messages"`
	TCPQuickAck    bool          `env:"MQTT_TCP_QUICKACK" envDefault:"true" desc:"acknowledge the broker's TCP segments at once (Linux TCP_QUICKACK): sub-millisecond delivery from a broker with Nagle on, for some CPU at moderate rates; false = the kernel's delayed ACKs"`
	PublishTimeout time.Duration `env:"MQTT_PUBLISH_TIMEOUT" envDefault:"10s" desc:"how long the command publisher waits for a PUBACK"`
	ReceiveMaximum int           `env:"MQTT_RECEIVE_MAXIMUM" envDefault:"65535" desc:"Receive Maximum a worker sends in CONNECT: how many un-acked messages the broker may send it (1 to 65535; 0 = MQTT_MAX_INFLIGHT). Past MQTT_MAX_INFLIGHT they wait in the connection's buffer; the broker's own in-flight limit applies too"`
	StarveTimeout  time.Duration `env:"MQTT_STARVE_TIMEOUT" envDefault:"5s" desc:"a subscribed worker that holds nothing un-acked and received nothing this long while its sibling workers received at least 20 x MQTT_WORKERS messages reconnects with its session (Mochi/Comqtt send-quota stall): WARN log, nr_bridge_worker_starved_total (0 = 5s)"`
	StallTimeout   time.Duration `env:"MQTT_STALL_TIMEOUT" envDefault:"2m" desc:"a worker whose oldest un-acked message waited longer is reported stalled: WARN log and /readyz not ready (0 = 2m)"`
}

// DefaultClientID is the client ID used when MQTT_CLIENT_ID is not set:
// nr-control-<hostname>, which is stable across restarts of a pod in a
// StatefulSet or of a container with a fixed hostname, so a restarted
// replica resumes its session and gets its queued share back. Without a
// hostname it falls back to a random suffix.
func DefaultClientID() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		var b strings.Builder
		for _, r := range h {
			if r < 0x21 || r > 0x7e || r == '+' || r == '#' || r == '/' {
				r = '-'
			}
			b.WriteRune(r)
		}
		return "nr-control-" + b.String()
	}
	var buf [4]byte
	_, _ = crand.Read(buf[:])
	return "nr-control-" + hex.EncodeToString(buf[:])
}

// Validate checks the fields against each other; errors name the variable.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("MQTT_URL %q: want scheme://host:port, e.g. tcp://localhost:1883", redact.URLs(c.URL))
	}
	if u.User != nil && (c.Username != "" || c.Password != "") {
		return fmt.Errorf("MQTT_URL %q carries user:password@ and MQTT_USERNAME or MQTT_PASSWORD is set too: set the credentials in one place", redact.URLs(c.URL))
	}
	tlsScheme := false
	switch strings.ToLower(u.Scheme) {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		tlsScheme = true
	default:
		return fmt.Errorf("MQTT_URL %q: scheme must be tcp, mqtt, ssl, tls or mqtts", redact.URLs(c.URL))
	}
	if !tlsScheme && (c.CAFile != "" || c.CertFile != "" || c.KeyFile != "") {
		return fmt.Errorf("MQTT_CA_FILE, MQTT_CERT_FILE and MQTT_KEY_FILE need a TLS MQTT_URL (ssl://, tls:// or mqtts://), got %q", redact.URLs(c.URL))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("MQTT_CERT_FILE and MQTT_KEY_FILE must be set together")
	}
	if c.ClientID == "" || len(c.ClientID) > 200 || strings.ContainsAny(c.ClientID, "+#/ ") {
		return fmt.Errorf("MQTT_CLIENT_ID %q: want 1 to 200 characters without + # / or spaces", c.ClientID)
	}
	if c.ShareGroup == "" || strings.ContainsAny(c.ShareGroup, "+#/") {
		return fmt.Errorf("MQTT_SHARE_GROUP %q: must be non-empty without + # /", c.ShareGroup)
	}
	if c.OrgID != "" && !bridge.ValidID(c.OrgID) {
		return fmt.Errorf("ORG_ID %q: want 1 to 64 characters of A-Z a-z 0-9 _ -", c.OrgID)
	}
	if c.Workers < 1 || c.Workers > 64 {
		return fmt.Errorf("MQTT_WORKERS must be between 1 and 64, got %d", c.Workers)
	}
	if c.SessionExpiry < 0 || c.SessionExpiry > time.Duration(^uint32(0))*time.Second {
		return fmt.Errorf("MQTT_SESSION_EXPIRY must be between 0s and %ds, got %s", ^uint32(0), c.SessionExpiry)
	}
	if c.KeepAlive < time.Second || c.KeepAlive > 65535*time.Second {
		return fmt.Errorf("MQTT_KEEPALIVE must be between 1s and 65535s, got %s", c.KeepAlive)
	}
	if c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin {
		return fmt.Errorf("MQTT_RECONNECT_MIN must be > 0 and <= MQTT_RECONNECT_MAX, got %s and %s", c.ReconnectMin, c.ReconnectMax)
	}
	if c.ConnectTimeout <= 0 {
		return fmt.Errorf("MQTT_CONNECT_TIMEOUT must be > 0, got %s", c.ConnectTimeout)
	}
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		return fmt.Errorf("MQTT_MAX_INFLIGHT must be between 1 and 65535, got %d", c.MaxInflight)
	}
	if err := c.validateStarve(); err != nil {
		return err
	}
	if c.AckInterval < time.Millisecond || c.AckInterval > time.Second {
		return fmt.Errorf("MQTT_ACK_INTERVAL must be between 1ms and 1s, got %s", c.AckInterval)
	}
	if c.PublishTimeout <= 0 {
		return fmt.Errorf("MQTT_PUBLISH_TIMEOUT must be > 0, got %s", c.PublishTimeout)
	}
	return nil
}

// TLSConfig loads the CA and client certificate files; nil for a plain TCP
// URL. The server name is left empty so the TLS dialer takes it from the
// URL's host and verifies the broker's certificate against it.
func (c *Config) TLSConfig() (*tls.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("MQTT_URL %q: not a URL", redact.URLs(c.URL)) // url's error repeats the URL
	}
	switch strings.ToLower(u.Scheme) {
	case "ssl", "tls", "mqtts":
	default:
		return nil, nil
	}
	return tlsfiles.Client("MQTT", c.CAFile, c.CertFile, c.KeyFile)
}

// ClientConfig is the autopaho configuration shared by the workers and the
// publisher; the caller sets the handlers.
func (c *Config) ClientConfig(clientID string, receiveMax uint16, log *slog.Logger) (autopaho.ClientConfig, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return autopaho.ClientConfig{}, fmt.Errorf("MQTT_URL %q: not a URL", redact.URLs(c.URL)) // url's error repeats the URL
	}
	username, password := c.Username, c.Password
	if u.User != nil {
		// autopaho ignores the URL's user info for CONNECT but prints the
		// URL in its connection errors: the credentials go to CONNECT and
		// the URL it sees has none.
		username = u.User.Username()
		password, _ = u.User.Password()
		u.User = nil
	}
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		return autopaho.ClientConfig{}, err
	}
	expiry := uint32(c.SessionExpiry / time.Second)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     uint16(c.KeepAlive / time.Second),
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         expiry,
		ReconnectBackoff:              backoff.Exponential(c.ReconnectMin, c.ReconnectMax),
		ConnectTimeout:                c.ConnectTimeout,
		AttemptConnection:             connector(c.TCPQuickAck), // buffered reads and coalesced writes (conn.go)
		ConnectUsername:               username,
		ConnectPassword:               []byte(password),
		Errors:                        slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		PahoErrors:                    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnectPacketBuilder: func(p *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if p.Properties == nil {
				p.Properties = &paho.ConnectProperties{}
			}
			rm := receiveMax
			p.Properties.ReceiveMaximum = &rm
			// Ask for reason strings on refusals (PUBACK/SUBACK >= 0x80), so logs
			// say why; autopaho leaves this off when it builds the properties.
			p.Properties.RequestProblemInfo = true
			return p, nil
		},
		ClientConfig: paho.ClientConfig{
			ClientID:      clientID,
			PacketTimeout: c.PublishTimeout,
		},
	}
	if password == "" {
		cfg.ConnectPassword = nil
	}
	return cfg, nil
}
