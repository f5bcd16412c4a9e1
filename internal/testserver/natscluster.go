package testserver

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// NATSCluster is a JetStream cluster of nats-server processes on
// 127.0.0.1, started by StartNATSCluster: node i is named n<i+1> (the name
// JetStream reports as a stream's cluster leader). Each node is a
// NATSProcess, so a test can Kill, Pause or Restart it.
type NATSCluster struct {
	Nodes []*NATSProcess
	names []string
}

// StartNATSCluster runs n nats-server processes (from PATH, else
// /usr/sbin/nats-server) with JetStream in one cluster, each with its own
// store, routes to all the others, and returns once every client port
// accepts TCP. The JetStream meta leader is elected afterwards: callers
// wait for the JetStream API to answer before they rely on it. Cleanups
// kill the processes.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	if n < 2 {
		t.Fatalf("testserver: a NATS cluster needs at least 2 nodes, got %d", n)
	}
	bin := findBinary(t, "nats-server", "nats-server")
	clientPorts, routePorts := make([]int, n), make([]int, n)
	routes := make([]string, n)
	for i := range n {
		var err error
		if clientPorts[i], err = freePort(); err == nil {
			routePorts[i], err = freePort()
		}
		if err != nil {
			t.Fatalf("testserver: NATS cluster ports: %v", err)
		}
		routes[i] = "nats://127.0.0.1:" + strconv.Itoa(routePorts[i])
	}
	c := &NATSCluster{}
	for i := range n {
		dir := t.TempDir()
		name := fmt.Sprintf("n%d", i+1)
		p := &NATSProcess{t: t, port: clientPorts[i], storeDir: filepath.Join(dir, "store"), logPath: filepath.Join(dir, "nats-server.log")}
		p.proc = &process{name: "nats-server " + name, bin: bin, logPath: p.logPath, args: []string{
			"-a", "127.0.0.1", "-p", strconv.Itoa(clientPorts[i]), "-n", name, "-js", "-sd", p.storeDir,
			"--cluster_name", "nr-test", "--cluster", routes[i], "--routes", strings.Join(routes, ","),
		}}
		logTailOnFailure(t, "nats-server "+name, p.logPath)
		t.Cleanup(p.Kill)
		c.Nodes = append(c.Nodes, p)
		c.names = append(c.names, name)
	}
	// All at once: a node waits for its routes before JetStream is up.
	for i, p := range c.Nodes {
		if err := p.start(); err != nil {
			t.Fatalf("testserver: start nats-server %s: %v\nlast lines of %s:\n%s", c.names[i], err, p.logPath, tailFile(p.logPath, logTailLines))
		}
	}
	return c
}

// URLs is every node's client URL, comma-separated, as NATS_URL takes them.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, p := range c.Nodes {
		urls[i] = p.URL()
	}
	return strings.Join(urls, ",")
}

// Node returns the index of the node with server name name (n1, n2, ...),
// or -1.
func (c *NATSCluster) Node(name string) int {
	for i, n := range c.names {
		if n == name {
			return i
		}
	}
	return -1
}

// Name is node i's server name.
func (c *NATSCluster) Name(i int) string { return c.names[i] }

// Addr is node i's client address, host:port.
func (c *NATSCluster) Addr(i int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Nodes[i].port))
}
