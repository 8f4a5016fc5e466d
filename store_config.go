package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/threadctl/threadctl/store/etcd"
)

// Store backends.
const (
	backendBbolt = "bbolt"
	backendEtcd  = "etcd"
)

// StoreConfig is where threadctl keeps its records (SPEC.md §8): a bbolt
// file in data_dir (the default, one instance), or an etcd v3 cluster
// shared by several instances.
type StoreConfig struct {
	Backend       string   `yaml:"backend"`
	EtcdEndpoints []string `yaml:"etcd_endpoints"`
	EtcdPrefix    string   `yaml:"etcd_prefix"`
	EtcdTLS       EtcdTLS  `yaml:"etcd_tls"`
}

// EtcdTLS are the PEM files of a TLS connection to etcd: a client
// certificate and its key (both or neither), and the CA that signed the
// cluster's certificates (default: the system's).
type EtcdTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

func (t EtcdTLS) set() bool { return t.Cert != "" || t.Key != "" || t.CA != "" }

// validateStore reports what is wrong with the store settings.
func (c *Config) validateStore() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	s := c.Store
	switch s.Backend {
	case backendBbolt:
		if c.DataDir == "" {
			bad("data_dir is empty: give the directory of the bbolt file")
		}
		if len(s.EtcdEndpoints) > 0 || s.EtcdTLS.set() {
			bad("store: etcd_endpoints or etcd_tls are set but the backend is bbolt: add --store etcd (store.backend: etcd, THREADCTL_STORE=etcd) to use the cluster")
		}
		return errs
	case backendEtcd:
	default:
		bad("store.backend %q: use bbolt (a file in --data-dir) or etcd (a cluster: --store etcd --etcd-endpoints URL,URL)", s.Backend)
		return errs
	}
	if len(s.EtcdEndpoints) == 0 {
		bad("store: the etcd backend needs its cluster: give --etcd-endpoints http://host:2379,... (store.etcd_endpoints, THREADCTL_ETCD_ENDPOINTS)")
	}
	for i, e := range s.EtcdEndpoints {
		u, err := url.Parse(e)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/"):
			bad("store.etcd_endpoints[%d] %q: give a client URL such as http://10.0.0.1:2379 or https://etcd-1:2379", i, e)
		case u.Scheme == "http" && s.EtcdTLS.set():
			bad("store.etcd_endpoints[%d] %q is http:// but etcd_tls is set: use https:// endpoints with TLS", i, e)
		}
	}
	if !strings.HasPrefix(s.EtcdPrefix, "/") || strings.ContainsRune(s.EtcdPrefix, 0) || strings.Contains(s.EtcdPrefix, "//") {
		bad("store.etcd_prefix %q: give a key prefix such as %s (it begins with /)", s.EtcdPrefix, etcd.DefaultPrefix)
	}
	if (s.EtcdTLS.Cert == "") != (s.EtcdTLS.Key == "") {
		bad("store.etcd_tls: give cert and key together (the client certificate and its private key)")
	}
	return errs
}

// etcdTLS loads the TLS files (relative paths are the config file's
// directory's), or returns nil without TLS. https:// endpoints without
// etcd_tls use the system's CAs.
func (c *Config) etcdTLS() (*tls.Config, error) {
	t := c.Store.EtcdTLS
	https := false
	for _, e := range c.Store.EtcdEndpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if !t.set() && !https {
		return nil, nil
	}
	path := func(p string) string {
		if p != "" && !filepath.IsAbs(p) && c.dir != "" {
			return filepath.Join(c.dir, p)
		}
		return p
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(path(t.Cert), path(t.Key))
		if err != nil {
			return nil, fmt.Errorf("store.etcd_tls: loading cert %s and key %s: %w", t.Cert, t.Key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if t.CA != "" {
		pem, err := os.ReadFile(path(t.CA))
		if err != nil {
			return nil, fmt.Errorf("store.etcd_tls: reading ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("store.etcd_tls: ca " + t.CA + " holds no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
