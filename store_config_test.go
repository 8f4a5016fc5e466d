package main

import (
	"strings"
	"testing"
)

// storeVars are the store's variables, cleared like serveVars.
var storeVars = []string{"THREADCTL_STORE", "THREADCTL_ETCD_ENDPOINTS", "THREADCTL_ETCD_PREFIX"}

func clearStoreEnv(t *testing.T) {
	t.Helper()
	clearEnv(t)
	for _, v := range storeVars {
		t.Setenv(v, "")
	}
}

// TestStoreSettings: the store is bbolt by default; etcd comes from the
// file, the variables or the flags, the flags winning.
func TestStoreSettings(t *testing.T) {
	clearStoreEnv(t)
	cfg, err := loadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Backend != "bbolt" || cfg.Store.EtcdPrefix != "/threadctl/" {
		t.Errorf("default store = %+v, want bbolt (prefix /threadctl/ for etcd)", cfg.Store)
	}

	path := writeConfig(t, "store:\n  backend: etcd\n  etcd_endpoints: [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n  etcd_prefix: /file/\n")
	cfg, err = loadConfig([]string{"--config", path})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Store.EtcdEndpoints, ","); cfg.Store.Backend != "etcd" || got != "http://10.0.0.1:2379,http://10.0.0.2:2379" || cfg.Store.EtcdPrefix != "/file/" {
		t.Errorf("from the file: %+v", cfg.Store)
	}

	t.Setenv("THREADCTL_ETCD_ENDPOINTS", "http://127.0.0.1:2379, http://127.0.0.1:22379")
	t.Setenv("THREADCTL_ETCD_PREFIX", "/env/")
	cfg, err = loadConfig([]string{"--config", path})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Store.EtcdEndpoints, ","); got != "http://127.0.0.1:2379,http://127.0.0.1:22379" || cfg.Store.EtcdPrefix != "/env/" {
		t.Errorf("variables over the file: %+v", cfg.Store)
	}

	cfg, err = loadConfig([]string{"--config", path, "--etcd-endpoints", "http://127.0.0.1:32379", "--etcd-prefix", "/flag/"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Store.EtcdEndpoints, ","); got != "http://127.0.0.1:32379" || cfg.Store.EtcdPrefix != "/flag/" {
		t.Errorf("flags over both: %+v", cfg.Store)
	}

	clearStoreEnv(t)
	t.Setenv("THREADCTL_STORE", "etcd")
	t.Setenv("THREADCTL_ETCD_ENDPOINTS", "http://127.0.0.1:2379")
	if cfg, err = loadConfig(nil); err != nil || cfg.Store.Backend != "etcd" {
		t.Errorf("THREADCTL_STORE=etcd: %+v, %v", cfg.Store, err)
	}
	if cfg, err = loadConfig([]string{"--store", "bbolt", "--etcd-endpoints", ""}); err != nil || cfg.Store.Backend != "bbolt" {
		t.Errorf("--store bbolt over the variable: %+v, %v", cfg.Store, err)
	}
}

// TestStoreBadValues: every bad store setting is refused with a message
// that names it and says what to give.
func TestStoreBadValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		yaml string
		want string
	}{
		{"unknown backend", []string{"--store", "postgres"}, "", `store.backend "postgres": use bbolt`},
		{"etcd without endpoints", []string{"--store", "etcd"}, "", "the etcd backend needs its cluster: give --etcd-endpoints"},
		{"endpoint without scheme", []string{"--store", "etcd", "--etcd-endpoints", "10.0.0.1:2379"}, "", `store.etcd_endpoints[0] "10.0.0.1:2379": give a client URL`},
		{"endpoint with a path", []string{"--store", "etcd", "--etcd-endpoints", "http://a:2379,http://b:2379/v3"}, "", `store.etcd_endpoints[1] "http://b:2379/v3"`},
		{"relative prefix", []string{"--store", "etcd", "--etcd-endpoints", "http://a:2379", "--etcd-prefix", "threadctl/"}, "", `store.etcd_prefix "threadctl/": give a key prefix`},
		{"endpoints for bbolt", []string{"--etcd-endpoints", "http://a:2379"}, "", "the backend is bbolt: add --store etcd"},
		{"cert without key", nil, "store: {backend: etcd, etcd_endpoints: [\"https://a:2379\"], etcd_tls: {cert: c.pem}}", "give cert and key together"},
		{"tls with http", nil, "store: {backend: etcd, etcd_endpoints: [\"http://a:2379\"], etcd_tls: {ca: ca.pem}}", "is http:// but etcd_tls is set"},
		{"unknown field", nil, "store: {backend: etcd, endpoints: [\"http://a:2379\"]}", "endpoints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearStoreEnv(t)
			args := tt.args
			if tt.yaml != "" {
				args = append(args, "--config", writeConfig(t, tt.yaml))
			}
			_, err := loadConfig(args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one saying %q", err, tt.want)
			}
		})
	}
}

// TestEtcdTLSFiles: missing TLS files are named when the store opens.
func TestEtcdTLSFiles(t *testing.T) {
	clearStoreEnv(t)
	cfg, err := loadConfig([]string{"--config", writeConfig(t, "store: {backend: etcd, etcd_endpoints: [\"https://a:2379\"], etcd_tls: {cert: c.pem, key: k.pem, ca: ca.pem}}")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.etcdTLS(); err == nil || !strings.Contains(err.Error(), "c.pem") {
		t.Errorf("etcdTLS = %v, want an error naming c.pem", err)
	}
}
