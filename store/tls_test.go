package store

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store/storetest"
)

// TestTLSOptionsConfig: the files of TLSOptions become one *tls.Config,
// and every file that cannot be used is an error naming it.
func TestTLSOptionsConfig(t *testing.T) {
	certs := storetest.NewCerts(t)
	c, err := TLSOptions{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey, ServerName: "redis.internal"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if c.RootCAs == nil || len(c.Certificates) != 1 || c.ServerName != "redis.internal" || c.InsecureSkipVerify ||
		c.MinVersion != tls.VersionTLS12 {
		t.Errorf("config %+v", c)
	}
	if c, err := (TLSOptions{}).Config(); err != nil || c.RootCAs != nil || len(c.Certificates) != 0 || c.InsecureSkipVerify {
		t.Errorf("zero options: %+v, %v; want the system's pool, no certificate, verified", c, err)
	}
	if c, _ := (TLSOptions{Insecure: true}).Config(); !c.InsecureSkipVerify {
		t.Error("Insecure does not skip verification")
	}

	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tt := range []struct {
		o    TLSOptions
		want []string
	}{
		{TLSOptions{CA: missing}, []string{"CA file", missing, "no such file"}},
		{TLSOptions{CA: notPEM}, []string{"CA file", notPEM, "no PEM certificate"}},
		{TLSOptions{CA: certs.ClientKey}, []string{"CA file", "no PEM certificate"}},
		{TLSOptions{Cert: certs.ClientCert}, []string{certs.ClientCert, "without its key"}},
		{TLSOptions{Key: certs.ClientKey}, []string{certs.ClientKey, "without its certificate"}},
		{TLSOptions{Cert: missing, Key: certs.ClientKey}, []string{"client certificate", missing, "no such file"}},
		{TLSOptions{Cert: certs.ClientCert, Key: missing}, []string{"client key", missing, "no such file"}},
		{TLSOptions{Cert: certs.ClientCert, Key: certs.ServerKey}, []string{certs.ClientCert, certs.ServerKey, "private key does not match"}},
		{TLSOptions{Cert: notPEM, Key: certs.ClientKey}, []string{notPEM, "failed to find any PEM data"}},
	} {
		_, err := tt.o.Config()
		if err == nil {
			t.Errorf("%+v: no error", tt.o)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q, want it to say %q", tt.o, err, w)
			}
		}
	}
}

// TestParseURLTLS: every form has a TLS twin whose options carry the TLS
// configuration; TLS options with a plaintext URL are refused.
func TestParseURLTLS(t *testing.T) {
	certs := storetest.NewCerts(t)
	to := TLSOptions{CA: certs.CA}
	for _, tt := range []struct {
		in       string
		addrs    int
		cluster  bool
		sentinel bool
	}{
		{in: "rediss://127.0.0.1:6379/0", addrs: 1},
		{in: "rediss://u:p@h:1/2", addrs: 1},
		{in: "rediss://a:7000,b:7001,c:7002", addrs: 3, cluster: true}, // was sent in the clear
		{in: "rediss-cluster://a:7000,b:7001", addrs: 2, cluster: true},
		{in: "rediss-cluster://a:7000", addrs: 1, cluster: true},
		{in: "rediss-sentinel://s1:26379,s2:26379/mymaster", addrs: 2, sentinel: true},
		{in: "rediss-sentinel://:pw@s1:26379/mymaster/2?sentinel_password=sp", addrs: 1, sentinel: true},
	} {
		for _, opts := range []TLSOptions{to, {}} {
			o, err := ParseURLTLS(tt.in, opts)
			if err != nil {
				t.Errorf("ParseURLTLS(%q, %+v): %v", tt.in, opts, err)
				continue
			}
			if len(o.Addrs) != tt.addrs || o.IsClusterMode != tt.cluster || (o.MasterName != "") != tt.sentinel {
				t.Errorf("ParseURLTLS(%q): addrs %v cluster %v master %q", tt.in, o.Addrs, o.IsClusterMode, o.MasterName)
			}
			if o.TLSConfig == nil || o.TLSConfig.MinVersion != tls.VersionTLS12 || o.TLSConfig.InsecureSkipVerify {
				t.Errorf("ParseURLTLS(%q, %+v): TLS config %+v, want TLS 1.2+, verified", tt.in, opts, o.TLSConfig)
				continue
			}
			if (o.TLSConfig.RootCAs != nil) != (opts.CA != "") {
				t.Errorf("ParseURLTLS(%q, %+v): RootCAs %v", tt.in, opts, o.TLSConfig.RootCAs)
			}
		}
		// ParseURL: the same, verified against the system's pool.
		if o, err := ParseURL(tt.in); err != nil || o.TLSConfig == nil || o.TLSConfig.RootCAs != nil {
			t.Errorf("ParseURL(%q): %v, %+v", tt.in, err, o)
		}
	}
	o, err := ParseURL("rediss://h:1/0?skip_verify=true")
	if err != nil || !InsecureTLS(o) {
		t.Errorf("skip_verify=true: %v, insecure %v", err, InsecureTLS(o))
	}
	if o, _ := ParseURLTLS("rediss-cluster://a:1", TLSOptions{Insecure: true}); !InsecureTLS(o) {
		t.Error("Insecure: InsecureTLS false")
	}

	for _, tt := range []struct{ in, want string }{
		{"redis://h:1/0", "use rediss://h:1/0"},
		{"h:1", "use rediss://h:1"},
		{"redis://a:1,b:2", "use rediss://a:1,b:2"},
		{"redis-cluster://a:1,b:2", "use rediss-cluster://a:1,b:2"},
		{"redis-sentinel://:secret@s:1/m", "use rediss-sentinel://:xxxxx@s:1/m"},
		{"unix:///tmp/redis.sock", "a unix socket takes no TLS"},
	} {
		_, err := ParseURLTLS(tt.in, to)
		if !errors.Is(err, ErrPlainURLWithTLS) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURLTLS(%q) with a CA: %v, want ErrPlainURLWithTLS saying %q (password hidden)", tt.in, err, tt.want)
		}
		if o, err := ParseURL(tt.in); err != nil || o.TLSConfig != nil {
			t.Errorf("ParseURL(%q): %v, TLS %v; want plaintext", tt.in, err, o.TLSConfig)
		}
	}
	for _, in := range []string{"http://a:1,b:2", "tls://h:1", "rediss-sentinel://s:1", "rediss-cluster://a:1/0"} {
		if _, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) succeeded", in)
		}
	}
	if _, err := ParseURLTLS("rediss://h:1", TLSOptions{CA: filepath.Join(t.TempDir(), "nope")}); err == nil ||
		!strings.Contains(err.Error(), "CA file") {
		t.Errorf("a missing CA file: %v", err)
	}
}

// TestConnectTLS runs against real redis-servers: one speaking only TLS
// and requiring client certificates (tls-auth-clients yes), one plaintext.
// Every wrong setting fails with an error that says what to check.
func TestConnectTLS(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{TLS: true, ClientAuth: "yes"})
	plain := storetest.Start(t, storetest.Options{})
	certs := srv.Certs
	ctx := context.Background()
	good := TLSOptions{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}

	rdb, err := ConnectTLS(ctx, srv.URL(), good, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	insecure := good
	insecure.CA, insecure.Insecure = "", true
	if rdb, err := ConnectTLS(ctx, srv.URL(), insecure, nil); err != nil {
		t.Errorf("insecure: %v", err)
	} else {
		rdb.Close()
	}
	localhost := good
	localhost.ServerName = "localhost"
	if rdb, err := ConnectTLS(ctx, srv.URL(), localhost, nil); err != nil {
		t.Errorf("server name localhost: %v", err)
	} else {
		rdb.Close()
	}

	other := storetest.NewCerts(t)
	noCert := good
	noCert.Cert, noCert.Key = "", ""
	wrongCA := good
	wrongCA.CA = other.CA
	wrongName := good
	wrongName.ServerName = "redis.example.org"
	foreignCert := good
	foreignCert.Cert, foreignCert.Key = other.ClientCert, other.ClientKey
	for _, tt := range []struct {
		name string
		url  string
		o    TLSOptions
		want string
	}{
		{"no client certificate", srv.URL(), noCert, "requires a client certificate"},
		{"wrong CA", srv.URL(), wrongCA, "not signed by a CA this process trusts"},
		{"system pool", srv.URL(), TLSOptions{}, "not signed by a CA this process trusts"},
		{"wrong server name", srv.URL(), wrongName, "--redis-tls-server-name"},
		{"client certificate of another CA", srv.URL(), foreignCert, "refused the client certificate"},
		{"rediss to a plaintext server", "rediss://" + plain.Addr, good, "does not speak TLS"},
		{"redis to a TLS server", "redis://" + srv.Addr, TLSOptions{}, "use a rediss URL"},
	} {
		start := time.Now()
		// A plaintext server may wait for the rest of what it takes for an
		// inline command, and the handshake for the dial timeout (5 s, 5
		// tries, each command tried 4 times: Connect gives up after 5 s).
		rdb, err := ConnectTLS(ctx, tt.url, tt.o, func(o *redis.UniversalOptions) {
			o.DialTimeout, o.DialerRetries, o.MaxRetries = time.Second, 1, -1
		})
		if err == nil {
			rdb.Close()
			t.Errorf("%s: connected", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q, want one line saying %q", tt.name, err, tt.want)
		}
		t.Logf("%s (%v): %v", tt.name, time.Now().Sub(start).Round(time.Millisecond), err)
	}
}
