package store

import (
	"context"
	"embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFiles embed.FS

// Every Lua script of the farm. Each one touches keys of a single hash slot
// (the keys it is given share a {tag}), so it runs on Redis Cluster.
var (
	scriptLeaseAcquire = loadScript("lease_acquire")
	scriptLeaseRelease = loadScript("lease_release")
	scriptDeadRequeue  = loadScript("dead_requeue")
	scriptCounterIncr  = loadScript("counter_incr")
	scriptSessionBind  = loadScript("session_bind")
	scriptSessionUnbnd = loadScript("session_unbind")
	scriptTimerAdd     = loadScript("timer_add")
	scriptTimerCancel  = loadScript("timer_cancel")
	scriptTimerDue     = loadScript("timer_due")
	scriptCronClaim    = loadScript("cron_claim")
	scriptOutTake      = loadScript("out_take")
	scriptTrim         = loadScript("trim")
	// The tic-tac-toe example's matches (tictactoe.go).
	scriptTTTNew     = loadScript("ttt_new")
	scriptTTTMove    = loadScript("ttt_move")
	scriptTTTForfeit = loadScript("ttt_forfeit")
)

// scripts lists every script by file name, for preloading and tests.
var scripts = map[string]*redis.Script{
	"lease_acquire":  scriptLeaseAcquire,
	"lease_release":  scriptLeaseRelease,
	"dead_requeue":   scriptDeadRequeue,
	"counter_incr":   scriptCounterIncr,
	"session_bind":   scriptSessionBind,
	"session_unbind": scriptSessionUnbnd,
	"timer_add":      scriptTimerAdd,
	"timer_cancel":   scriptTimerCancel,
	"timer_due":      scriptTimerDue,
	"cron_claim":     scriptCronClaim,
	"out_take":       scriptOutTake,
	"trim":           scriptTrim,
	"ttt_new":        scriptTTTNew,
	"ttt_move":       scriptTTTMove,
	"ttt_forfeit":    scriptTTTForfeit,
}

func loadScript(name string) *redis.Script {
	src, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic("store: missing embedded script " + name)
	}
	return redis.NewScript(string(src))
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

// IsNoScript reports whether err says the server lacks a script.
func IsNoScript(err error) bool {
	return redis.HasErrorPrefix(err, "NOSCRIPT")
}
