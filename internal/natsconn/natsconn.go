// Package natsconn opens the bridge's NATS connection with the options a
// long-running bridge needs: reconnect forever, retry the first connect,
// TLS and credentials from files named by variables, and one log line per
// failed connection attempt saying why.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nr-bridge/nr-bridge/internal/ratelog"
	"github.com/nr-bridge/nr-bridge/internal/redact"
	"github.com/nr-bridge/nr-bridge/internal/tlsfiles"
)

// Config is the NATS connection configuration. At most one way to
// authenticate may be set: NATS_CREDS_FILE, NATS_NKEY_FILE,
// NATS_USER/NATS_PASSWORD or NATS_TOKEN.
type Config struct {
	URL       string `env:"NATS_URL" envDefault:"nats://localhost:4222" desc:"NATS server URL(s), comma-separated; tls:// for TLS"`
	CAFile    string `env:"NATS_CA_FILE" desc:"PEM CA bundle that signs the NATS server's certificate (default: system roots); setting any NATS TLS file turns TLS on"`
	CertFile  string `env:"NATS_CERT_FILE" desc:"PEM client certificate for mTLS (with NATS_KEY_FILE)"`
	KeyFile   string `env:"NATS_KEY_FILE" desc:"PEM client key for mTLS (with NATS_CERT_FILE)"`
	CredsFile string `env:"NATS_CREDS_FILE" desc:"NATS credentials file (user JWT and NKey seed, from nsc)"`
	NKeyFile  string `env:"NATS_NKEY_FILE" desc:"file holding an NKey user seed (SU...)"`
	User      string `env:"NATS_USER" desc:"user name (with NATS_PASSWORD)"`
	Password  string `env:"NATS_PASSWORD" desc:"password of NATS_USER" secret:"true"`
	Token     string `env:"NATS_TOKEN" desc:"authorization token" secret:"true"`
}

// Validate checks the fields against each other and that every file named
// can be read; errors name the variable.
func (c *Config) Validate() error {
	for _, raw := range strings.Split(c.URL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return fmt.Errorf("NATS_URL %q: want scheme://host:port, e.g. nats://localhost:4222", raw)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("NATS_CERT_FILE and NATS_KEY_FILE must be set together")
	}
	var auth []string
	if c.CredsFile != "" {
		auth = append(auth, "NATS_CREDS_FILE")
	}
	if c.NKeyFile != "" {
		auth = append(auth, "NATS_NKEY_FILE")
	}
	if c.User != "" || c.Password != "" {
		auth = append(auth, "NATS_USER/NATS_PASSWORD")
	}
	if c.Token != "" {
		auth = append(auth, "NATS_TOKEN")
	}
	if len(auth) > 1 {
		return fmt.Errorf("set only one of %s", strings.Join(auth, ", "))
	}
	if c.Password != "" && c.User == "" {
		return errors.New("NATS_PASSWORD needs NATS_USER")
	}
	if _, err := c.Options(); err != nil {
		return err
	}
	return nil
}

// Options returns the nats.Options for TLS and authentication, reading
// every file now, so that a missing or unreadable one fails at start with
// an error naming its variable instead of failing each connection attempt.
func (c *Config) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
		tc, err := tlsfiles.Client("NATS", c.CAFile, c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	switch {
	case c.CredsFile != "":
		b, err := os.ReadFile(c.CredsFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_CREDS_FILE: %w", err)
		}
		if !strings.Contains(string(b), "NATS USER JWT") || !strings.Contains(string(b), "USER NKEY SEED") {
			return nil, fmt.Errorf("NATS_CREDS_FILE %s: not a NATS credentials file (want a user JWT and an NKey seed block)", c.CredsFile)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_FILE: %w", err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	return opts, nil
}

// Connect returns a connection that reconnects forever. With
// RetryOnFailedConnect it returns before the server is reachable; callers
// wait for readiness through their first request. MaxReconnects(-1) matters:
// the default gives up after about two minutes and leaves JetStream async
// publishes unresolved forever; IgnoreAuthErrorAbort likewise keeps a
// rejected password or certificate from closing the connection for good, so
// fixing the credentials on the server side is enough to recover.
//
// Each failed attempt (refused TCP, failed TLS handshake, authorization
// violation) is logged with its reason and the (redacted) URL: the first
// at WARN, then one WARN per 30 s and Debug in between (ratelog.Failures). The connection owns a small
// goroutine that reports handshake and authorization failures; it ends when
// the connection is closed (Close or Drain).
func Connect(cfg Config, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	return ConnectWatched(cfg, name, log, nil, extra...)
}

// ConnectWatched is Connect that also hands every failed attempt's error
// to onFail (nil: none), for a readiness check that says why the
// connection is not up. onFail must not block.
func ConnectWatched(cfg Config, name string, log *slog.Logger, onFail func(error), extra ...nats.Option) (*nats.Conn, error) {
	log = log.With("component", "nats")
	auth, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	var fl ratelog.Failures
	url := redact.URLs(cfg.URL)
	failed := func(err error) {
		fl.Failed(log, "NATS connection attempt failed", err, "url", url)
		if onFail != nil {
			onFail(err)
		}
	}
	closed := make(chan struct{})
	var closeOnce sync.Once
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(200*time.Millisecond, time.Second),
		nats.ConnectHandler(func(c *nats.Conn) {
			fl.Reset()
			log.Info("NATS connection established", "url", c.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err == nil && (c.IsClosed() || c.IsDraining()) {
				return // our own Drain or Close at shutdown
			}
			log.Warn("NATS connection lost", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			fl.Reset()
			log.Info("NATS connection established", "url", c.ConnectedUrlRedacted(), "reconnect", true)
		}),
		// Called for a refused TCP connection and for the first failed
		// attempt; handshake and authorization failures of later attempts
		// only show in the status change watched below.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			failed(err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("NATS async error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("NATS async error", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { closeOnce.Do(func() { close(closed) }) }),
	}
	opts = append(opts, auth...)
	nc, err := nats.Connect(cfg.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect NATS %s: %w", redact.URLs(cfg.URL), err)
	}
	// After a failed handshake or a refused CONNECT, nats.go sets the
	// connection back to RECONNECTING with the error in LastError.
	status := nc.StatusChanged(nats.RECONNECTING)
	go func() {
		defer nc.RemoveStatusListener(status)
		for {
			select {
			case <-closed:
				return
			case <-status:
				if err := nc.LastError(); err != nil {
					failed(err)
				}
			}
		}
	}()
	return nc, nil
}
