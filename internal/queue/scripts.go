package queue

import (
	"context"
	"embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// The farm's Lua scripts are the files lua/<area>_<verb>.lua, each opening
// with its KEYS, ARGV and reply, and each embedded into a package var
// beside the one method that runs it (loadScript). Every script touches
// keys of a single hash slot (the keys it is given share a {tag}), so it
// runs on Redis Cluster.

//go:embed lua/*.lua
var luaFiles embed.FS

// scripts lists every script by file name, for preloading and tests;
// loadScript fills it.
var scripts = map[string]*redis.Script{}

// loadScript returns the script of lua/<name>.lua and lists it in scripts.
func loadScript(name string) *redis.Script {
	src, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic("store: missing embedded script " + name)
	}
	s := redis.NewScript(string(src))
	scripts[name] = s
	return s
}

// LoadScripts loads every script into the server's script cache so that
// pipelined EVALSHA calls find them. Call it again after a NOSCRIPT error:
// a restarted Redis has an empty cache.
func LoadScripts(ctx context.Context, rdb redis.UniversalClient) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			return loadAll(ctx, c)
		})
	}
	return loadAll(ctx, rdb)
}

func loadAll(ctx context.Context, c redis.Scripter) error {
	for name, s := range scripts {
		if err := s.Load(ctx, c).Err(); err != nil {
			return fmt.Errorf("store: load script %s: %w", name, err)
		}
	}
	return nil
}

// execScripts runs the commands fill queues (EVALSHAs among them) in one
// pipeline on rdb. If Redis lacks a script (it restarted: NOSCRIPT), it
// loads them all and runs fill's commands once more; fill makes new ones
// each time. It returns the pipeline's error; each command holds its own.
func execScripts(ctx context.Context, rdb redis.UniversalClient, fill func(pipe redis.Pipeliner)) error {
	for attempt := 0; ; attempt++ {
		pipe := rdb.Pipeline()
		fill(pipe)
		_, err := pipe.Exec(ctx)
		if err != nil && IsNoScript(err) && attempt == 0 && LoadScripts(ctx, rdb) == nil {
			continue
		}
		return err
	}
}

// IsNoScript reports whether err says the server lacks a script.
func IsNoScript(err error) bool {
	return redis.HasErrorPrefix(err, "NOSCRIPT")
}
