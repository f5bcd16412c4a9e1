package devmode

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsStartTimeout bounds how long the embedded NATS server may take to
// accept connections (JetStream recovers its store first).
const natsStartTimeout = 30 * time.Second

// natsServer is the embedded nats-server with JetStream.
type natsServer struct {
	srv *server.Server
}

// startNATS starts nats-server on addr with its JetStream store under
// dataDir and waits until it accepts connections. A start failure (port
// taken, store unusable) is reported by nats-server through Fatalf, which
// our logger turns into the returned error instead of a silent timeout.
func startNATS(ctx context.Context, addr, dataDir string, log *slog.Logger) (*natsServer, error) {
	// Port 0 would mean 4222 to nats-server, not a free port: refused.
	host, port, err := splitPort(addr, "NATS_URL")
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:             "nr-dev",
		Host:                   host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               dataDir,
		NoSigs:                 true, // signals belong to nr-bridge
		DisableJetStreamBanner: true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	nl := newNATSLogger(log)
	srv.SetLoggerV2(nl, log.Enabled(ctx, slog.LevelDebug), false, false)
	go srv.Start() // returns once the accept loop runs, or after a Fatalf

	deadline := time.Now().Add(natsStartTimeout)
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		var err error
		select {
		case msg := <-nl.fatal:
			err = fmt.Errorf("NATS_URL %s: nats server failed to start: %s", addr, msg)
		case <-ctx.Done():
			err = fmt.Errorf("nats server: %w", ctx.Err())
		default:
			if time.Now().After(deadline) {
				err = fmt.Errorf("NATS_URL %s: nats server not ready after %s", addr, natsStartTimeout)
			}
		}
		if err != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, err
		}
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("DEV_DATA_DIR %s: nats server started without JetStream (see its log)", dataDir)
	}
	return &natsServer{srv: srv}, nil
}

func (n *natsServer) addr() string {
	if a := n.srv.Addr(); a != nil {
		return a.String()
	}
	return ""
}

// streamMessages reads the message count of every stream in the default
// account from the server's own monitoring data.
func (n *natsServer) streamMessages() (map[string]uint64, error) {
	acc, err := n.srv.JszAccount(&server.JSzOptions{Account: n.srv.GlobalAccount().Name, Streams: true})
	if err != nil {
		return nil, fmt.Errorf("jetstream account info: %w", err)
	}
	out := make(map[string]uint64, len(acc.Streams))
	for _, s := range acc.Streams {
		out[s.Name] = s.State.Msgs
	}
	return out, nil
}

// stop shuts the server down (flushing JetStream) and waits for it.
func (n *natsServer) stop() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
