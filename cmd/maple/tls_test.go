package main

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/store/storetest"
)

// TestRedisTLSFlagsEverywhere: every command that takes --redis takes the
// TLS flags too, each with its MAPLE_ variable.
func TestRedisTLSFlagsEverywhere(t *testing.T) {
	want := map[string]string{
		"redis-tls-ca": "MAPLE_REDIS_TLS_CA", "redis-tls-cert": "MAPLE_REDIS_TLS_CERT",
		"redis-tls-key": "MAPLE_REDIS_TLS_KEY", "redis-tls-server-name": "MAPLE_REDIS_TLS_SERVER_NAME",
		"redis-tls-insecure": "MAPLE_REDIS_TLS_INSECURE",
	}
	var withRedis []string
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := strings.TrimSpace(path + " " + c.Name)
			walk(name, c.Subcommands)
			envs := map[string][]string{}
			for _, f := range c.Flags {
				if e, ok := f.(interface{ GetEnvVars() []string }); ok {
					envs[f.Names()[0]] = e.GetEnvVars()
				}
			}
			if _, ok := envs["redis"]; !ok {
				continue
			}
			withRedis = append(withRedis, name)
			for flag, env := range want {
				if !slices.Equal(envs[flag], []string{env}) {
					t.Errorf("maple %s: --%s with env %v, want [%s]", name, flag, envs[flag], env)
				}
			}
		}
	}
	walk("", newApp().Commands)
	for _, must := range []string{"gateway", "worker", "stat", "trigger broadcast", "trigger write_to_worker", "dead list", "dead requeue"} {
		if !slices.Contains(withRedis, must) {
			t.Errorf("maple %s takes no --redis (commands with it: %v)", must, withRedis)
		}
	}
}

// TestRedisTLSFlags runs maple commands against a redis-server that speaks
// only TLS and requires client certificates: the flags and their
// variables reach it; wrong or contradictory settings fail with one line
// that says what to fix; --redis-tls-insecure is a warning at start.
func TestRedisTLSFlags(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{TLS: true, ClientAuth: "yes"})
	certs := srv.Certs
	tlsArgs := []string{"--redis", srv.URL(), "--redis-tls-ca", certs.CA,
		"--redis-tls-cert", certs.ClientCert, "--redis-tls-key", certs.ClientKey}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: srv.TLSConfig()})
	t.Cleanup(func() { rdb.Close() })

	// Flags.
	pubsub := rdb.Subscribe(t.Context(), "maple:trigger")
	defer pubsub.Close()
	if _, err := pubsub.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	out, err := runApp(t, append([]string{"trigger", "broadcast", "--force", "--cmd", "100", "--body", "over TLS"}, tlsArgs...)...)
	if err != nil {
		t.Fatalf("trigger broadcast over TLS: %v\n%s", err, out)
	}
	select {
	case m := <-pubsub.Channel():
		if !strings.Contains(m.Payload, "over TLS") {
			t.Errorf("trigger published %q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Error("the broadcast did not arrive")
	}
	out, err = runApp(t, append([]string{"dead", "list", "--force"}, tlsArgs...)...)
	if err != nil || !strings.Contains(out, "0 dead letters") {
		t.Errorf("dead list over TLS: %v\n%s", err, out)
	}

	// The same from the environment, and a server name the certificate
	// carries.
	t.Setenv("MAPLE_REDIS", srv.URL())
	t.Setenv("MAPLE_REDIS_TLS_CA", certs.CA)
	t.Setenv("MAPLE_REDIS_TLS_CERT", certs.ClientCert)
	t.Setenv("MAPLE_REDIS_TLS_KEY", certs.ClientKey)
	t.Setenv("MAPLE_REDIS_TLS_SERVER_NAME", "localhost")
	out, err = runApp(t, "stat", "--once")
	if err != nil || !strings.Contains(out, "maple stat") {
		t.Errorf("stat --once from MAPLE_REDIS_TLS_*: %v\n%s", err, out)
	}

	// Wrong settings: one line saying what to fix.
	missing := filepath.Join(t.TempDir(), "missing-ca.pem")
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"a TLS flag with a plaintext url", []string{"--redis", "redis://" + srv.Addr + "/0"},
			[]string{"use rediss://" + srv.Addr + "/0", "--redis-tls-ca", "--redis-tls-cert"}},
		{"a missing CA file", []string{"--redis-tls-ca", missing}, []string{"CA file", missing, "no such file"}},
		{"no client certificate", []string{"--redis-tls-cert", "", "--redis-tls-key", ""}, []string{"requires a client certificate"}},
		{"a wrong server name", []string{"--redis-tls-server-name", "redis.example.org"}, []string{"--redis-tls-server-name"}},
		{"a key without its certificate", []string{"--redis-tls-cert", ""}, []string{certs.ClientKey, "without its certificate"}},
	} {
		for _, cmd := range [][]string{{"stat", "--once"}, {"trigger", "broadcast", "--force", "--cmd", "1"}, {"worker"}} {
			out, err := runApp(t, append(cmd, tt.args...)...)
			if err == nil {
				t.Errorf("%s: maple %v succeeded:\n%s", tt.name, cmd, out)
				continue
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) || strings.Contains(err.Error(), "\n") {
					t.Errorf("%s: maple %v: %q, want one line saying %q", tt.name, cmd, err, w)
				}
			}
		}
	}

	// --redis-tls-insecure: no CA needed, and a warning in the log.
	t.Setenv("MAPLE_REDIS_TLS_CA", "")
	t.Setenv("MAPLE_REDIS_TLS_SERVER_NAME", "")
	var log storetest.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	app := newApp()
	app.Writer, app.ErrWriter = &bytes.Buffer{}, &log
	go func() {
		done <- app.RunContext(ctx, []string{"maple", "worker", "--redis-tls-insecure", "--log-level", "warn"})
	}()
	deadline := time.After(15 * time.Second)
	for registered := false; !registered; {
		select {
		case err := <-done:
			t.Fatalf("worker --redis-tls-insecure stopped: %v", err)
		case <-deadline:
			t.Fatal("worker --redis-tls-insecure did not register")
		case <-time.After(50 * time.Millisecond):
			n, _ := rdb.ZCard(t.Context(), "maple:workers").Result()
			registered = n > 0
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("worker: %v", err)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "NOT verified") {
		t.Errorf("worker --redis-tls-insecure logged no warning:\n%s", log.String())
	}
	out, err = runApp(t, "stat", "--once", "--redis-tls-insecure")
	if err != nil {
		t.Errorf("stat --once --redis-tls-insecure: %v\n%s", err, out)
	}
	if !strings.Contains(out, "maple: warning: redis TLS: the servers' certificates are NOT verified") {
		t.Errorf("stat --redis-tls-insecure printed no warning: %q", out)
	}
}
