package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/ratelog"
	"github.com/nr-bridge/nr-bridge/internal/redact"
)

// subscribeBatch is the number of topic filters per SUBSCRIBE packet.
const subscribeBatch = 100

// conn is one MQTT connection carrying a share of the fleet: it publishes
// those nodes' events, receives their commands and sends their replies.
// Its goroutines (generator, publishers, reply senders, subscribers) are
// owned by it and end in stop.
type conn struct {
	k        int
	clientID string
	cfg      *Config
	st       *stats
	log      *slog.Logger
	nodes    []*node
	byNode   map[string]*node   // "<org>/<node>" -> node, for node commands
	byOrg    map[string][]*node // org -> its nodes on this connection, for broadcasts
	filters  []string

	cm       *autopaho.ConnectionManager
	cancelCM context.CancelFunc
	up       atomic.Bool
	connErr  atomic.Pointer[string] // the last connection error, for the start timeout
	ready    chan struct{}          // closed after the first complete subscription
	once     sync.Once
	subWG    sync.WaitGroup

	jobs     chan job // unbuffered: the generator paces, publishers take
	eventsWG sync.WaitGroup
	events   chan struct{} // closed when the generator and publishers are done

	replyMu     sync.RWMutex
	repliesDone bool
	replies     chan reply
	replyWG     sync.WaitGroup
	replySeq    atomic.Uint64

	warn *ratelog.Limiter // publish-failure warnings, at most every 5 s
}

// job is one event to publish.
type job struct {
	n   *node
	seq uint64
}

func newConn(k int, cfg *Config, st *stats, nodes []*node) *conn {
	c := &conn{
		k:        k,
		warn:     ratelog.New(5 * time.Second),
		clientID: fmt.Sprintf("%s-%d", cfg.ClientPrefix, k),
		cfg:      cfg,
		st:       st,
		nodes:    nodes,
		byNode:   make(map[string]*node, len(nodes)),
		byOrg:    map[string][]*node{},
		ready:    make(chan struct{}),
		jobs:     make(chan job),
		events:   make(chan struct{}),
		replies:  make(chan reply, 1024),
	}
	c.log = cfg.Logger.With("client_id", c.clientID)
	for _, n := range nodes {
		c.byNode[n.org+"/"+n.id] = n
		if _, ok := c.byOrg[n.org]; !ok {
			c.filters = append(c.filters, "org/"+n.org+"/broadcast/cmd")
		}
		c.byOrg[n.org] = append(c.byOrg[n.org], n)
		c.filters = append(c.filters, "org/"+n.org+"/node/"+n.id+"/cmd")
	}
	return c
}

// start opens the connection in the background (autopaho reconnects with a
// backoff that is never zero) and starts the reply senders.
func (c *conn) start(ctx context.Context) error {
	u, err := url.Parse(c.cfg.URL)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	var tlsCfg *tls.Config
	switch strings.ToLower(u.Scheme) {
	case "ssl", "tls", "mqtts":
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.cfg.TLS != nil {
			tlsCfg = c.cfg.TLS.Clone()
		}
	}
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              backoff.Exponential(500*time.Millisecond, 10*time.Second),
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               c.cfg.Username,
		OnConnectionUp:                c.onUp,
		OnConnectionDown: func() bool {
			c.up.Store(false)
			c.log.Warn("MQTT connection lost")
			return true
		},
		OnConnectError: func(err error) {
			msg := err.Error()
			c.connErr.Store(&msg)
			c.log.Warn("MQTT connection attempt failed", "url", redact.URLs(c.cfg.URL), "err", err)
		},
		Errors:     slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
		PahoErrors: slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
		ClientConfig: paho.ClientConfig{
			ClientID:          c.clientID,
			PacketTimeout:     c.cfg.PublishTimeout,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.onPublish},
		},
	}
	if c.cfg.Password != "" {
		cc.ConnectPassword = []byte(c.cfg.Password)
	}
	cmCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cm, err := autopaho.NewConnection(cmCtx, cc)
	if err != nil {
		cancel()
		return fmt.Errorf("connection %s: %w", c.clientID, err)
	}
	c.cm, c.cancelCM = cm, cancel
	for range 4 {
		c.replyWG.Go(c.sendReplies)
	}
	return nil
}

func (c *conn) onUp(cm *autopaho.ConnectionManager, _ *paho.Connack) {
	c.up.Store(true)
	c.connErr.Store(nil)
	c.log.Debug("MQTT connection established", "url", redact.URLs(c.cfg.URL))
	// Subscribing waits for SUBACKs, and OnConnectionUp must not block.
	c.subWG.Go(func() { c.subscribe(cm) })
}

// subscribe subscribes to every node's cmd topic and every org's broadcast
// topic on this connection; the session is clean, so after each reconnect.
func (c *conn) subscribe(cm *autopaho.ConnectionManager) {
	for i := 0; i < len(c.filters); i += subscribeBatch {
		batch := c.filters[i:min(i+subscribeBatch, len(c.filters))]
		sub := &paho.Subscribe{}
		for _, f := range batch {
			sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.PublishTimeout)
		ack, err := cm.Subscribe(ctx, sub)
		cancel()
		if err != nil && ack == nil {
			if !errors.Is(err, autopaho.ConnectionDownError) {
				c.log.Warn("MQTT subscribe failed", "err", err)
			}
			return // the next connection subscribes again
		}
		for j, rc := range ack.Reasons {
			if rc >= 0x80 && j < len(batch) {
				c.log.Error("MQTT subscription refused", "topic", batch[j], "reason_code", rc)
			}
		}
	}
	c.once.Do(func() { close(c.ready) })
}

// startEvents starts the generator and the publishers; c.events is closed
// when all of them are done (ctx ended or every node sent Count events).
func (c *conn) startEvents(ctx context.Context) {
	for range c.cfg.Inflight {
		c.eventsWG.Go(func() {
			for j := range c.jobs {
				c.publishEvent(ctx, j)
			}
		})
	}
	c.eventsWG.Go(func() { c.generate(ctx) })
	go func() {
		c.eventsWG.Wait()
		close(c.events)
	}()
}

// generate paces the events of this connection's nodes: Rate x nodes per
// second, round-robin over the nodes so each gets Rate, from one ticker. It
// hands events to the publishers and closes c.jobs when done. A backlog
// (publishers slower than the rate, or the connection down) is not caught
// up beyond half a second's worth: the achieved rate then shows in the
// progress lines.
func (c *conn) generate(ctx context.Context) {
	defer close(c.jobs)
	if c.cfg.Rate == 0 || len(c.nodes) == 0 {
		return
	}
	perSec := c.cfg.Rate * float64(len(c.nodes))
	total := c.cfg.Count * len(c.nodes)
	interval := min(max(time.Duration(float64(time.Second)/perSec), time.Millisecond), 50*time.Millisecond)
	maxBurst := max(1, int(perSec/2))
	seqs := make([]uint64, len(c.nodes))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	start := time.Now()
	emitted, next := 0, 0
	for {
		// Event e (0-based) is due at start + e/perSec.
		due := int(time.Since(start).Seconds()*perSec) + 1 - emitted
		if due > maxBurst {
			start = start.Add(time.Duration(float64(due-maxBurst) / perSec * float64(time.Second)))
			due = maxBurst
		}
		for ; due > 0; due-- {
			seqs[next]++
			select {
			case c.jobs <- job{n: c.nodes[next], seq: seqs[next]}:
			case <-ctx.Done():
				return
			}
			next = (next + 1) % len(c.nodes)
			emitted++
			if total > 0 && emitted == total {
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// publishEvent publishes one event and records the outcome. While the
// connection is down it waits for the next one (the event is not sent
// twice: a publish refused with ConnectionDownError never left). When ctx
// ends meanwhile, the event is dropped uncounted.
func (c *conn) publishEvent(ctx context.Context, j job) {
	id := msgID(c.cfg.RunID, j.n, j.seq)
	for {
		ts := time.Now()
		payload := appendEvent(make([]byte, 0, c.cfg.Size+16), c.cfg.RunID, j.n, j.seq, ts.UnixNano(), c.cfg.Size)
		// In-flight publishes finish after ctx ends (bounded by the timeout)
		// so that the summary counts their PUBACKs.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.PublishTimeout)
		c.st.inflight.Add(1)
		_, err := c.cm.Publish(pctx, &paho.Publish{
			Topic:   j.n.topic,
			QoS:     c.cfg.QoS,
			Payload: payload,
			Properties: &paho.PublishProperties{
				ContentType: "application/json",
				User:        paho.UserProperties{{Key: bridge.MsgIDProperty, Value: id}},
			},
		})
		d := time.Since(ts)
		cancel()
		c.st.inflight.Add(-1)
		if errors.Is(err, autopaho.ConnectionDownError) {
			if c.cm.AwaitConnection(ctx) != nil {
				return
			}
			continue
		}
		c.st.sent.Add(1)
		if err != nil {
			c.st.failed.Add(1)
			c.warnRateLimited("event publish failed", "topic", j.n.topic, "msg_id", id, "err", err)
			return
		}
		if c.cfg.QoS > 0 {
			c.st.acked.Add(1)
			c.st.latency.Record(d)
		}
		return
	}
}

// warnRateLimited logs at most one warning per 5 s per connection.
func (c *conn) warnRateLimited(msg string, args ...any) {
	if c.warn.Allow() {
		c.log.Warn(msg, args...)
	}
}

// stop waits for the reply senders to finish what is queued, then
// disconnects and waits for every goroutine of the connection. The event
// goroutines must be done (or never started).
func (c *conn) stop(ctx context.Context) {
	c.replyMu.Lock()
	c.repliesDone = true
	close(c.replies)
	c.replyMu.Unlock()
	c.replyWG.Wait()
	if c.cm != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = c.cm.Disconnect(dctx)
		cancel()
		c.cancelCM()
		<-c.cm.Done()
	}
	c.subWG.Wait()
}
