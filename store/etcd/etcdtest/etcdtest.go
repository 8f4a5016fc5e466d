// Package etcdtest starts, for tests and demos, a real etcd cluster of
// several members inside the process (go.etcd.io/etcd/server/v3/embed), on
// loopback ports and in temporary directories. threadctl itself never
// starts etcd.
package etcdtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Cluster is a running in-process cluster.
type Cluster struct {
	Dir       string
	members   []*member
	token     string
	removeDir bool
}

type member struct {
	name         string
	cfg          *embed.Config
	mu           sync.Mutex
	etcd         *embed.Etcd
	client, peer url.URL
}

// Options tune a cluster.
type Options struct {
	Members int    // default 3
	Dir     string // default a new temporary directory, removed by Close
	// Ports, if set, are the members' client ports (then peer ports are
	// these plus 1000); otherwise free loopback ports are picked.
	Ports []int
}

// Start starts a cluster and waits until every member is ready. When it
// picked the ports itself and one was taken before etcd bound it, it tries
// again on new ones (twice at most).
func Start(o Options) (*Cluster, error) {
	for try := 0; ; try++ {
		c, err := start(o)
		if err == nil || try == 2 || len(o.Ports) > 0 || o.Dir != "" || !strings.Contains(err.Error(), "address already in use") {
			return c, err
		}
	}
}

func start(o Options) (*Cluster, error) {
	if o.Members <= 0 {
		o.Members = 3
	}
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "threadctl-etcd-"); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Dir: dir, removeDir: o.Dir == "", token: fmt.Sprintf("threadctl-%d", time.Now().UnixNano())}
	var initial []string
	for i := range o.Members {
		var cp, pp int
		if i < len(o.Ports) {
			cp, pp = o.Ports[i], o.Ports[i]+1000
		} else {
			var err error
			if cp, err = freePort(); err != nil {
				return nil, err
			}
			if pp, err = freePort(); err != nil {
				return nil, err
			}
		}
		m := &member{
			name:   fmt.Sprintf("m%d", i+1),
			client: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cp)},
			peer:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pp)},
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer.String())
	}
	for _, m := range c.members {
		cfg := embed.NewConfig()
		if _, err := os.Stat(filepath.Join(dir, m.name, "member")); err == nil {
			cfg.ClusterState = embed.ClusterStateFlagExisting
		}
		cfg.Name = m.name
		cfg.Dir = filepath.Join(dir, m.name)
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{m.client}, []url.URL{m.client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{m.peer}, []url.URL{m.peer}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = c.token
		if cfg.ClusterState != embed.ClusterStateFlagExisting {
			cfg.ClusterState = embed.ClusterStateFlagNew
		}
		cfg.LogLevel = "fatal" // its shutdown logs errors of closed listeners
		cfg.AutoCompactionMode, cfg.AutoCompactionRetention = "periodic", "5m"
		cfg.ListenMetricsUrls = nil
		m.cfg = cfg
	}
	// Members wait for each other: start them at once.
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (m *member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		return fmt.Errorf("etcd member %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("etcd member %s: not ready after 30 s", m.name)
	}
	m.etcd = e
	return nil
}

// freePort picks a loopback port for a member, free when picked: etcd
// binds it later itself (its URLs must be known before it starts), so the
// port is chosen below the kernel's ephemeral range (32768 and up on
// Linux), where other tests' listeners on port 0 and outgoing connections
// do not land. A port taken by the kernel's choice of an ephemeral port
// between the pick and etcd's bind made another test's server receive this
// cluster's raft traffic, and this cluster fail with "address already in
// use".
func freePort() (int, error) {
	for range 100 {
		p := 10000 + rand.IntN(20000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, errors.New("no free loopback port between 10000 and 30000")
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.client.String())
	}
	return out
}

// Leader is the index of the member leading the cluster's raft group, or
// -1 if none does (or it is not known yet).
func (c *Cluster) Leader() int {
	for i, m := range c.members {
		m.mu.Lock()
		e := m.etcd
		m.mu.Unlock()
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// StopMember stops member i (0-based), as a machine going down.
func (c *Cluster) StopMember(i int) {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
}

// RestartMember starts a stopped member again on its data.
func (c *Cluster) RestartMember(i int) error {
	m := c.members[i]
	m.cfg.ClusterState = embed.ClusterStateFlagExisting
	return m.start()
}

// Close stops every member, and removes the directory if Start made it.
func (c *Cluster) Close() {
	for i := range c.members {
		c.StopMember(i)
	}
	if c.removeDir {
		os.RemoveAll(c.Dir)
	}
}
