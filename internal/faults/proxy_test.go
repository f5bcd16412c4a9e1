//go:build faults

package faults

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// throttleProxy is a TCP proxy whose client-to-server direction can be
// slowed to a byte rate: a slow or congested link to the backbone. The
// server-to-client direction is not limited.
type throttleProxy struct {
	ln     net.Listener
	target string
	rate   atomic.Int64 // bytes per second; 0 = unlimited

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startProxy listens on a free port of 127.0.0.1 and forwards to target.
// A cleanup closes it and every connection.
func startProxy(t testing.TB, target string) *throttleProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &throttleProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's listen address.
func (p *throttleProxy) Addr() string { return p.ln.Addr().String() }

// SetRate limits the client-to-server direction to bps bytes per second;
// 0 removes the limit.
func (p *throttleProxy) SetRate(bps int64) { p.rate.Store(bps) }

func (p *throttleProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, s) {
			return
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			p.copyThrottled(s, c)
			s.Close()
			c.Close()
		}()
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(c, s)
			s.Close()
			c.Close()
		}()
	}
}

func (p *throttleProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// copyThrottled copies src to dst in chunks of at most 1 KiB, sleeping
// after each as long as the rate asks.
func (p *throttleProxy) copyThrottled(dst io.Writer, src io.Reader) {
	buf := make([]byte, 1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if bps := p.rate.Load(); bps > 0 {
				time.Sleep(time.Duration(int64(n) * int64(time.Second) / bps))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *throttleProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
