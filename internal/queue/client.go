package queue

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// The farm's processes open their Redis clients here: NewClient for
// commands and pipelines, NewBlockingClient for the commands that wait
// (XREADGROUP BLOCK, BLMOVE). store.Connect opens a NewClient too.

// NewClient returns the client for o that the farm's processes use: go-redis's
// universal client (one server, Sentinel or Cluster), and on a Cluster a
// client that reloads its slot map as soon as a node fails.
//
// go-redis (v9.23) reloads a cluster's slot map on a MOVED reply and
// otherwise only every 60 s. When a master dies, its replica takes over
// within about two node timeouts, but nothing answers MOVED for the dead
// node's slots: every command for them goes to the dead address and fails
// (connection refused, EOF, timeout) until the 60 s reload, and so the
// frames of those partitions, the replies of the gateways whose lists live
// there, and the trigger subscription if its channel hashes there, all
// stall a minute after the cluster itself has healed. Here any such failure
// asks for a reload (go-redis runs at most one at a time, then waits 200 ms
// before the next), so the client follows a failover within a fraction of
// a second of the promotion.
func NewClient(o *redis.UniversalOptions) redis.UniversalClient {
	rdb := redis.NewUniversalClient(o)
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		h := reloadOnFailure{cc}
		cc.AddHook(h)
		// Node clients dial for the subscriptions too, which no command
		// hook sees.
		cc.OnNewNode(func(n *redis.Client) { n.AddHook(dialReload{cc}) })
	}
	return rdb
}

// reloadOnFailure asks a cluster client for a slot map reload when a
// command fails in a way a changed topology explains.
type reloadOnFailure struct{ cc *redis.ClusterClient }

func (h reloadOnFailure) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnFailure) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if topologyError(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadOnFailure) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		reload := topologyError(err)
		for _, c := range cmds {
			if reload {
				break
			}
			reload = topologyError(c.Err())
		}
		if reload {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

// dialReload asks for a reload when a node cannot be dialled.
type dialReload struct{ cc *redis.ClusterClient }

func (h dialReload) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil && !errors.Is(err, context.Canceled) {
			h.cc.ReloadState(ctx)
		}
		return c, err
	}
}

func (h dialReload) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h dialReload) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// topologyError reports whether err may mean the cluster's slot map
// changed: a network failure, or a reply saying the cluster or a master is
// down, or a node is not (or no longer) a master. Replies about the command
// itself (NOSCRIPT, BUSYGROUP, WRONGTYPE, a missing key) are not.
func topologyError(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		for _, p := range []string{"CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING", "READONLY", "MOVED", "ASK"} {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	return true // the network, a timeout, a closed connection
}

// NewBlockingClient returns the client for o for commands that block
// (the worker's XREADGROUP BLOCK, the gateway's BLMOVE), with a pool of
// pool connections (0 keeps o's): a blocked command holds a connection, so
// blocking commands get their own pool, apart from the pipelines'.
//
// Its commands have no read timeout (a blocking command sets its own
// deadline: its block and 10 s) and are never retried silently: a
// blocking read whose reply was lost must surface as an error, so that
// the caller recovers what it took (ReadOwnPending; a TakeOutWait leaves
// its message in the list for the next take); a retry would take more and
// lose the first. A pipeline that blocks (TakeOutWait) and a command
// built ahead (InboundReads) get no such deadline from go-redis: with
// pipelineBlock > 0 (their longest block) every read times out after
// pipelineBlock and 10 s, so that a node that never answers (a network
// partition drops packets, no reset comes) is given up like a blocking
// command's, not waited for forever.
func NewBlockingClient(o *redis.UniversalOptions, pool int, pipelineBlock time.Duration) redis.UniversalClient {
	bo := *o
	bo.ReadTimeout = -1
	if pipelineBlock > 0 {
		bo.ReadTimeout = pipelineBlock + 10*time.Second
	}
	bo.MaxRetries = -1
	if pool > 0 {
		bo.PoolSize = pool
	}
	return NewClient(&bo)
}
