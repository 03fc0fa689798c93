package testkit

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	natsClusterName         = "latchkey-test"
	natsClusterReadyTimeout = 30 * time.Second
	natsClusterTries        = 3
)

// NATSClusterServers is a JetStream cluster of embedded nats-servers, started by
// NATSCluster.
type NATSClusterServers struct {
	servers []*server.Server
	stops   []sync.Once
}

// NATSCluster starts n embedded nats-servers with JetStream on random 127.0.0.1
// ports, routed into one cluster, each storing under its own temporary directory,
// and waits until JetStream has elected its leader and every server is current.
// The servers are shut down when the test ends. Connect to URL, or to one server's
// ClientURL.
func NATSCluster(t testing.TB, n int) *NATSClusterServers {
	t.Helper()
	if n < 1 {
		t.Fatalf("testkit: a NATS cluster needs at least one server, asked for %d", n)
	}
	var lastErr error
	// Another process may take a reserved route port before its server binds
	// it; start the whole cluster again on new ports then.
	for range natsClusterTries {
		c, err := startNATSCluster(t.TempDir(), n)
		if err == nil {
			t.Cleanup(c.shutdown)
			return c
		}
		lastErr = err
	}
	t.Fatalf("testkit: starting a %d-server NATS cluster: %v", n, lastErr)
	return nil
}

func startNATSCluster(dir string, n int) (*NATSClusterServers, error) {
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(p)
	}
	c := &NATSClusterServers{stops: make([]sync.Once, n)}
	for i := range n {
		name := "lk-" + strconv.Itoa(i+1)
		srv, err := server.NewServer(&server.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   filepath.Join(dir, name),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: natsClusterName, Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			c.shutdown()
			return nil, fmt.Errorf("configuring server %s: %w", name, err)
		}
		srv.Start()
		c.servers = append(c.servers, srv)
		if !srv.ReadyForConnections(10 * time.Second) {
			c.shutdown()
			return nil, fmt.Errorf("server %s (routes on port %d) not ready in 10s", name, ports[i])
		}
	}
	if err := c.waitForJetStream(natsClusterReadyTimeout); err != nil {
		c.shutdown()
		return nil, err
	}
	return c, nil
}

// waitForJetStream waits until the cluster has a JetStream leader that sees every
// server as a peer and every server is current with it.
func (c *NATSClusterServers) waitForJetStream(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c.jetStreamReady() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("jetstream elected no leader with every server current within " + timeout.String())
}

func (c *NATSClusterServers) jetStreamReady() bool {
	leader := false
	for _, s := range c.servers {
		if !s.JetStreamIsCurrent() {
			return false
		}
		if s.JetStreamIsLeader() {
			leader = len(s.JetStreamClusterPeers()) == len(c.servers)
		}
	}
	return leader
}

// URL is every server's client URL, comma-separated, as LATCHKEY_NATS_URL and
// bus.ConnectOptions take a cluster.
func (c *NATSClusterServers) URL() string {
	urls := make([]string, len(c.servers))
	for i, s := range c.servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// ClientURL is server i's client URL (from 0).
func (c *NATSClusterServers) ClientURL(i int) string { return c.servers[i].ClientURL() }

// Size is the number of servers the cluster started with.
func (c *NATSClusterServers) Size() int { return len(c.servers) }

// Stop shuts server i (from 0) down and waits until it has stopped, so a test can
// see how its code behaves with a node gone. It is safe to call more than once.
func (c *NATSClusterServers) Stop(i int) {
	c.stops[i].Do(func() {
		c.servers[i].Shutdown()
		c.servers[i].WaitForShutdown()
	})
}

func (c *NATSClusterServers) shutdown() {
	for i := range c.servers {
		c.Stop(i)
	}
}
