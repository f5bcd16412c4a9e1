package mqttconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"golang.org/x/net/proxy"
)

// Buffer sizes of an MQTT connection.
const (
	connReadBuffer  = 32 << 10
	connWriteBuffer = 16 << 10
)

// bufConn is the MQTT connection the bridge gives paho: reads go through a
// bufio.Reader and writes through a bufio.Writer that is flushed shortly
// after each packet.
//
// Why: paho reads a packet's fixed header byte by byte, one read syscall
// each, and writes every PUBACK of a manual-ack batch as its own packet.
// Profiles of the bridge at saturation showed half its CPU in those
// syscalls.
//
// It implements sync.Locker: paho's ControlPacket.WriteTo locks a Locker
// connection for the whole packet, which is what keeps packets written from
// different goroutines (PUBACKs, PUBLISHes, PINGREQs) from interleaving;
// without it Mosquitto drops the connection as malformed. Every paho write
// goes through WriteTo, so Write always runs with the lock held.
//
// Unlock does not flush itself: it wakes a flusher goroutine, which takes
// the lock and flushes what is buffered. A batch of PUBACKs that paho's ack
// tracker writes in a loop, or PUBLISHes from concurrent callers, leaves in
// one write syscall instead of one each; a lone packet waits only for the
// flusher to be scheduled (microseconds).
type bufConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	w       *bufio.Writer // guarded by mu
	pending bool          // guarded by mu: a flush is requested

	kick      chan struct{}
	closed    chan struct{}
	flushed   chan struct{} // closed when the flusher has returned
	closeOnce sync.Once
}

// startBufConn wraps c and starts its flusher goroutine, which the
// connection owns: Close stops it and waits for it.
func startBufConn(c net.Conn) *bufConn {
	b := &bufConn{
		Conn:    c,
		r:       bufio.NewReaderSize(c, connReadBuffer),
		w:       bufio.NewWriterSize(c, connWriteBuffer),
		kick:    make(chan struct{}, 1),
		closed:  make(chan struct{}),
		flushed: make(chan struct{}),
	}
	go b.flushLoop()
	return b
}

// Read reads from the buffered reader; paho reads from one goroutine only.
func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Write buffers p; the caller holds the lock (paho's WriteTo).
func (b *bufConn) Write(p []byte) (int, error) { return b.w.Write(p) }

// Lock is held by paho for the whole of one packet.
func (b *bufConn) Lock() { b.mu.Lock() }

// Unlock releases the connection and asks the flusher to send what the
// packet left in the buffer.
func (b *bufConn) Unlock() {
	wake := !b.pending && b.w.Buffered() > 0
	if wake {
		b.pending = true
	}
	b.mu.Unlock()
	if wake {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

func (b *bufConn) flushLoop() {
	defer close(b.flushed)
	for {
		select {
		case <-b.kick:
		case <-b.closed:
			return
		}
		b.mu.Lock()
		b.pending = false
		err := b.w.Flush()
		b.mu.Unlock()
		if err != nil {
			// bufio keeps the error for the next Write; closing the
			// connection also ends paho's reader, so paho notices now.
			b.closeOnce.Do(func() { close(b.closed) })
			_ = b.Conn.Close()
			return
		}
	}
}

// closeFlushTimeout bounds the last flush of Close, so that closing a
// connection whose peer stopped reading does not hang.
const closeFlushTimeout = time.Second

// Close sends what is still buffered (the last PUBACKs and the DISCONNECT
// of a clean shutdown; at most closeFlushTimeout), stops the flusher,
// waits for it and closes the connection.
func (b *bufConn) Close() error {
	first := false
	b.closeOnce.Do(func() {
		first = true
		close(b.closed)
	})
	if first {
		// The deadline first: it also ends a write blocked on a peer that
		// stopped reading, whose goroutine holds the lock.
		_ = b.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		b.mu.Lock()
		if b.w.Buffered() > 0 {
			_ = b.w.Flush()
		}
		b.mu.Unlock()
	}
	err := b.Conn.Close()
	<-b.flushed
	return err
}

// connector returns autopaho's AttemptConnection for the bridge, with TCP
// quick ACKs (MQTT_TCP_QUICKACK, withQuickAck) on or off.
func connector(quickAck bool) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		return attemptConnection(ctx, cfg, u, quickAck)
	}
}

// attemptConnection dials the broker: TCP or TLS (from the URL scheme),
// bounded by ConnectTimeout, wrapped in a bufConn. It honours all_proxy like
// autopaho's own dialer.
func attemptConnection(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL, quickAck bool) (net.Conn, error) {
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	var d interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	} = &net.Dialer{KeepAlive: 30 * time.Second}
	if os.Getenv("all_proxy") != "" {
		if pd, ok := proxy.FromEnvironment().(proxy.ContextDialer); ok {
			d = pd
		}
	}
	var c net.Conn
	var err error
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp", "":
		c, err = d.DialContext(ctx, "tcp", u.Host)
		if err == nil && quickAck {
			c = withQuickAck(c)
		}
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		c, err = d.DialContext(ctx, "tcp", u.Host)
		if err == nil && quickAck {
			c = withQuickAck(c) // under TLS: its records arrive in the same segments
		}
		if err == nil {
			cfgTLS := cfg.TlsCfg.Clone()
			if cfgTLS == nil {
				cfgTLS = &tls.Config{}
			}
			if cfgTLS.ServerName == "" {
				cfgTLS.ServerName = u.Hostname()
			}
			tc := tls.Client(c, cfgTLS)
			if err = tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			c = tc
		}
	default:
		return nil, fmt.Errorf("unsupported scheme %q in %s", u.Scheme, u.Redacted())
	}
	if err != nil {
		return nil, err
	}
	return startBufConn(c), nil
}
