package mqttconn

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nr-bridge/nr-bridge/internal/ratelog"
)

// ReasonSessionTakenOver is the DISCONNECT reason code 0x8E: another client
// connected with the same client ID, and the broker closed this one.
const ReasonSessionTakenOver byte = 0x8E

const (
	// takeoverWindow is how long after a takeover readiness still reports
	// it: two bridges with one client ID take the session from each other
	// every few milliseconds, each briefly connected, and must not look
	// healthy.
	takeoverWindow = 30 * time.Second
	// shortLived and takeoverDrops: a connection that the broker closes
	// within shortLived of being established, takeoverDrops times within
	// takeoverWindow, is being taken over. Mosquitto 2.0 closes the old
	// connection without a DISCONNECT, so this is all a client sees.
	shortLived    = 2 * time.Second
	takeoverDrops = 3
)

// errTakenOver is what readiness reports during a takeover.
var errTakenOver = errors.New("session taken over by another client with the same client ID (MQTT_CLIENT_ID must be unique per bridge)")

// Takeover notices that the broker hands a connection's session to another
// client with the same client ID (two replicas with one MQTT_CLIENT_ID, or
// a second bridge on the same host with the default nr-control-<hostname>):
// both reconnect in turn and take the session back and forth, and without
// it the log only shows "connection lost". It recognises a DISCONNECT with
// reason 0x8E (EMQX, newer Mosquitto) and, from brokers that just close the
// socket (Mosquitto 2.0), connections closed right after they were
// established, again and again. It is safe for concurrent use.
type Takeover struct {
	warn ratelog.Limiter

	mu    sync.Mutex
	upAt  time.Time
	drops []time.Time // recent short-lived connections
	at    time.Time   // the last takeover seen
}

// OnServerDisconnect is autopaho's OnServerDisconnect for the connection
// clientID: a DISCONNECT with 0x8E is a takeover.
func (t *Takeover) OnServerDisconnect(clientID string, log *slog.Logger) func(*paho.Disconnect) {
	return func(d *paho.Disconnect) {
		if d != nil && d.ReasonCode == ReasonSessionTakenOver {
			t.seen(clientID, log, "DISCONNECT reason code 0x8E (session taken over)")
		}
	}
}

// Up records that the connection is established.
func (t *Takeover) Up() {
	t.mu.Lock()
	t.upAt = time.Now()
	t.mu.Unlock()
}

// Down records that the connection was lost; a connection that lived less
// than shortLived, the third time within takeoverWindow, is a takeover.
func (t *Takeover) Down(clientID string, log *slog.Logger) {
	now := time.Now()
	t.mu.Lock()
	lived := now.Sub(t.upAt)
	if t.upAt.IsZero() || lived > shortLived {
		t.mu.Unlock()
		return
	}
	kept := t.drops[:0]
	for _, d := range t.drops {
		if now.Sub(d) < takeoverWindow {
			kept = append(kept, d)
		}
	}
	t.drops = append(kept, now)
	n := len(t.drops)
	t.mu.Unlock()
	if n >= takeoverDrops {
		t.seen(clientID, log, "the broker closed the connection right after it was established, repeatedly")
	}
}

func (t *Takeover) seen(clientID string, log *slog.Logger, evidence string) {
	t.mu.Lock()
	t.at = time.Now()
	t.mu.Unlock()
	if t.warn.Allow() {
		log.Warn("MQTT session taken over: another client connected with this client ID; give every bridge its own MQTT_CLIENT_ID",
			"client_id", clientID, "evidence", evidence)
	}
}

// Err returns an error while a takeover happened within the last 30 s, for
// readiness; nil otherwise.
func (t *Takeover) Err() error {
	t.mu.Lock()
	at := t.at
	t.mu.Unlock()
	if at.IsZero() || time.Since(at) > takeoverWindow {
		return nil
	}
	return errTakenOver
}
