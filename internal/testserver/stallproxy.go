package testserver

import (
	"io"
	"net"
	"sync"
	"testing"
)

// StallProxy forwards TCP to a server; while stalled it stops reading from
// its clients, so their writes block once the socket buffers are full and
// their requests never reach the server, as on a congested link to an
// overloaded server. Its goroutines end, and are waited for, at cleanup.
type StallProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	stalled bool
	resume  *sync.Cond
	conns   []net.Conn
}

// StartStallProxy listens on a free port of 127.0.0.1 and forwards every
// connection to target; a cleanup closes everything.
func StartStallProxy(t testing.TB, target string) *StallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &StallProxy{ln: ln}
	p.resume = sync.NewCond(&p.mu)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(c, s) }()
			go func() { defer wg.Done(); p.copyClient(s, c) }()
		}
	}()
	t.Cleanup(func() {
		p.SetStalled(false)
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *StallProxy) Addr() string { return p.ln.Addr().String() }

// SetStalled stops (true) or resumes (false) reading from the clients.
func (p *StallProxy) SetStalled(v bool) {
	p.mu.Lock()
	p.stalled = v
	p.mu.Unlock()
	p.resume.Broadcast()
}

func (p *StallProxy) copyClient(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		p.mu.Lock()
		for p.stalled {
			p.resume.Wait()
		}
		p.mu.Unlock()
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
