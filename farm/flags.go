package farm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
)

// Flags shared by several commands. Every flag can also be set from an
// environment variable MAPLE_<NAME>.
var (
	redisFlag = &cli.StringFlag{
		Name: "redis", Value: "redis://127.0.0.1:6379/0", EnvVars: []string{"MAPLE_REDIS"},
		Usage: "Redis URL: redis://[user:pass@]host:port/db, unix:///path, redis-sentinel://host:port,.../master, " +
			"redis-cluster://host:port,... (or redis://host:port,host:port); rediss://, rediss-sentinel://, " +
			"rediss-cluster:// for TLS (the --redis-tls-* flags need one of these)",
	}
	// The TLS flags go with --redis on every command that takes it
	// (redisFlags). They need a TLS URL: with a plaintext one they are an
	// error, never silently ignored.
	redisTLSCAFlag = &cli.StringFlag{
		Name: "redis-tls-ca", EnvVars: []string{"MAPLE_REDIS_TLS_CA"}, TakesFile: true,
		Usage: "PEM file of the CAs the Redis servers' certificates must chain to (default: the system's pool)",
	}
	redisTLSCertFlag = &cli.StringFlag{
		Name: "redis-tls-cert", EnvVars: []string{"MAPLE_REDIS_TLS_CERT"}, TakesFile: true,
		Usage: "PEM file of a client certificate, for servers with tls-auth-clients yes (with --redis-tls-key)",
	}
	redisTLSKeyFlag = &cli.StringFlag{
		Name: "redis-tls-key", EnvVars: []string{"MAPLE_REDIS_TLS_KEY"}, TakesFile: true,
		Usage: "PEM file of the client certificate's private key",
	}
	redisTLSServerNameFlag = &cli.StringFlag{
		Name: "redis-tls-server-name", EnvVars: []string{"MAPLE_REDIS_TLS_SERVER_NAME"},
		Usage: "name every Redis server's certificate must carry, and the SNI (default: the host of each address dialled)",
	}
	redisTLSInsecureFlag = &cli.BoolFlag{
		Name: "redis-tls-insecure", EnvVars: []string{"MAPLE_REDIS_TLS_INSECURE"},
		Usage: "TESTS ONLY: do not verify the Redis servers' certificates (encrypted, but anyone in between " +
			"can read and change it); logged as a warning at start",
	}
	prefixFlag = &cli.StringFlag{
		Name: "prefix", Value: store.DefaultPrefix, EnvVars: []string{"MAPLE_PREFIX"},
		Usage: "prefix of every Redis key and channel of the farm",
	}
	partitionsFlag = &cli.IntFlag{
		Name: "partitions", Value: queue.DefaultPartitions, EnvVars: []string{"MAPLE_PARTITIONS"},
		Usage: "number of inbound queues; fixed by the farm's first process, later ones read it from Redis",
	}
	logLevelFlag = &cli.StringFlag{
		Name: "log-level", Value: "info", EnvVars: []string{"MAPLE_LOG_LEVEL"},
		Usage: "debug, info, warn or error",
	}
	logFormatFlag = &cli.StringFlag{
		Name: "log-format", Value: "text", EnvVars: []string{"MAPLE_LOG_FORMAT"},
		Usage: "text or json",
	}
)

func logFlags() []cli.Flag { return []cli.Flag{logLevelFlag, logFormatFlag} }

// redisFlags are --redis and its TLS flags: every command that talks to
// Redis takes them all.
func redisFlags() []cli.Flag {
	return []cli.Flag{redisFlag, redisTLSCAFlag, redisTLSCertFlag, redisTLSKeyFlag, redisTLSServerNameFlag, redisTLSInsecureFlag}
}

// redisTLS returns the --redis-tls-* settings.
func redisTLS(c *cli.Context) store.TLSOptions {
	return store.TLSOptions{
		CA: c.String("redis-tls-ca"), Cert: c.String("redis-tls-cert"), Key: c.String("redis-tls-key"),
		ServerName: c.String("redis-tls-server-name"), Insecure: c.Bool("redis-tls-insecure"),
	}
}

// parseRedis parses --redis with the TLS flags (the TLS configuration is
// built here, once per process) and warns when the servers will not be
// verified.
func parseRedis(c *cli.Context) (*redis.UniversalOptions, error) {
	o, err := store.ParseURLTLS(c.String("redis"), redisTLS(c))
	if errors.Is(err, store.ErrPlainURLWithTLS) {
		var set []string
		for _, f := range redisFlags()[1:] {
			if name := f.Names()[0]; c.IsSet(name) {
				set = append(set, "--"+name)
			}
		}
		return nil, fmt.Errorf("%w (set: %s)", err, strings.Join(set, ", "))
	}
	if err != nil {
		return nil, err
	}
	if store.InsecureTLS(o) {
		const msg = "redis TLS: the servers' certificates are NOT verified (--redis-tls-insecure or skip_verify): for tests only"
		if log, ok := c.App.Metadata[loggerKey].(*slog.Logger); ok {
			log.Warn(msg)
		} else {
			fmt.Fprintln(c.App.ErrWriter, c.App.Name+": warning:", msg)
		}
	}
	return o, nil
}

// connectRedis opens a client on --redis and its TLS flags, checked with a
// PING (store.ConnectOptions).
func connectRedis(c *cli.Context) (redis.UniversalClient, error) {
	o, err := parseRedis(c)
	if err != nil {
		return nil, err
	}
	rdb, err := store.ConnectOptions(c.Context, c.String("redis"), o)
	return rdb, permissionError(err)
}

// newLogger builds the process's logger from --log-level and --log-format.
func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch strings.ToLower(c.String("log-format")) {
	case "text", "":
		log = slog.New(slog.NewTextHandler(w, opts))
	case "json":
		log = slog.New(slog.NewJSONHandler(w, opts))
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", c.String("log-format"))
	}
	// go-redis logs its own retries (dial failures while Redis restarts)
	// with the standard logger; route them through ours, as warnings, so
	// json logs stay json and the farm's own line says what it does.
	redis.SetLogger(redisLogger{log.With("component", "go-redis")})
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	c.App.Metadata[loggerKey] = log // for warnings at start (parseRedis)
	return log, nil
}

// redisLogger adapts slog to go-redis's internal logger.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

// loggerKey is where newLogger leaves the process's logger in the app's
// Metadata.
const loggerKey = "maple.logger"

// redisOptions parses --redis and the TLS flags and checks that the server
// answers, so a wrong URL is a one-line error naming it.
func redisOptions(c *cli.Context) (*redis.UniversalOptions, error) {
	o, err := parseRedis(c)
	if err != nil {
		return nil, err
	}
	rdb, err := store.ConnectOptions(c.Context, c.String("redis"), o)
	if err != nil {
		return nil, permissionError(err)
	}
	rdb.Close()
	return o, nil
}

// permissionError turns a refusal by the Redis user's ACL (a NOPERM reply:
// the command, key or channel is not the user's) into one line saying so in
// Redis's words; other errors pass unchanged.
func permissionError(err error) error {
	var re redis.Error
	if !store.IsNoPermission(err) || !errors.As(err, &re) {
		return err
	}
	return store.PermissionError(re)
}
