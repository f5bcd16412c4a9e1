package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// cmdResult is the outcome of one command load phase.
type cmdResult struct {
	ok, failed int64
	elapsed    time.Duration
	lat        []time.Duration
	firstErr   string
}

// cmdLoad posts commands to the bridge's HTTP API with keep-alive clients:
// to /org/demo/node/n<i>/cmd round-robin over nodes (nr-sim's subscribed
// nodes). With rate 0 it runs `clients` closed loops (saturation); with a
// rate it paces the requests (open loop) over `clients` senders.
func cmdLoad(ctx context.Context, base string, nodes, clients int, rate float64, d time.Duration) cmdResult {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	hc := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	defer tr.CloseIdleConnections()
	var seq atomic.Int64
	var mu sync.Mutex
	var res cmdResult
	one := func() {
		i := seq.Add(1)
		url := fmt.Sprintf("%s/org/demo/node/n%d/cmd", base, i%int64(nodes)+1)
		body := fmt.Sprintf(`{"type":"ping","version":1,"correlation_id":"bench-%d","issued_at":%d,"ttl_sec":60,"payload":{"n":%d}}`,
			i, time.Now().Unix(), i)
		start := time.Now()
		resp, err := hc.Post(url, "application/json", bytes.NewBufferString(body))
		var b []byte
		if err == nil {
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		lat := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			res.failed++
			if res.firstErr == "" {
				res.firstErr = err.Error()
			}
		case resp.StatusCode != http.StatusAccepted:
			res.failed++
			if res.firstErr == "" {
				res.firstErr = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
			}
		default:
			res.ok++
			res.lat = append(res.lat, lat)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	if rate <= 0 {
		for range clients {
			wg.Go(func() {
				for ctx.Err() == nil {
					one()
				}
			})
		}
	} else {
		tokens := make(chan struct{}, clients)
		for range clients {
			wg.Go(func() {
				for range tokens {
					one()
				}
			})
		}
		interval := time.Duration(float64(time.Second) / rate)
		next := time.Now()
		for ctx.Err() == nil {
			next = next.Add(interval)
			if w := time.Until(next); w > 0 {
				select {
				case <-time.After(w):
				case <-ctx.Done():
				}
			}
			if ctx.Err() == nil {
				tokens <- struct{}{}
			}
		}
		close(tokens)
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}
