package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/store"
)

// Flags shared by several commands. Every flag can also be set from an
// environment variable MAPLE_<NAME>.
var (
	redisFlag = &cli.StringFlag{
		Name: "redis", Value: "redis://127.0.0.1:6379/0", EnvVars: []string{"MAPLE_REDIS"},
		Usage: "Redis URL (redis://[user:pass@]host:port/db, rediss:// for TLS, unix:///path)",
	}
	prefixFlag = &cli.StringFlag{
		Name: "prefix", Value: store.DefaultPrefix, EnvVars: []string{"MAPLE_PREFIX"},
		Usage: "prefix of every Redis key and channel of the farm",
	}
	partitionsFlag = &cli.IntFlag{
		Name: "partitions", Value: store.DefaultPartitions, EnvVars: []string{"MAPLE_PARTITIONS"},
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
	return log, nil
}

// redisLogger adapts slog to go-redis's internal logger.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

// redisOptions parses --redis and checks that the server answers, so a
// wrong URL is a one-line error naming it.
func redisOptions(c *cli.Context) (*redis.UniversalOptions, error) {
	raw := c.String("redis")
	rdb, err := store.Connect(c.Context, raw, nil)
	if err != nil {
		return nil, err
	}
	rdb.Close()
	return store.ParseURL(raw)
}

var stderr io.Writer = os.Stderr
