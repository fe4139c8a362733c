package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
)

// reapEvery is how often a worker looks for dead gateways: a dead
// gateway's players can log in elsewhere within GatewayTimeout + reapEvery.
const reapEvery = 2 * time.Second

// reaper removes the sessions and lists of gateways that stopped sending
// heartbeats, so their users can log in elsewhere and pushes to them stop.
// Any worker may do it; it is idempotent. It remembers the gateways it
// found dead: the outbox and the handlers send them nothing more (a write
// would only recreate a deleted list), and their handled marks are gone.
type reaper struct {
	q       *queue.Broker
	log     *slog.Logger
	timeout time.Duration // Options.GatewayTimeout

	mu     sync.RWMutex
	deadGW map[string]time.Time

	ctx    context.Context
	cancel context.CancelFunc
}

type reaperParams struct {
	queue          *queue.Broker
	log            *slog.Logger
	gatewayTimeout time.Duration
}

func newReaper(p reaperParams) *reaper {
	ctx, cancel := context.WithCancel(context.Background())
	return &reaper{q: p.queue, log: p.log, timeout: p.gatewayTimeout, deadGW: make(map[string]time.Time),
		ctx: ctx, cancel: cancel}
}

// start reaps at once, then every reapEvery, until shutdown.
func (r *reaper) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(reapEvery)
		defer tick.Stop()
		for {
			r.reap(r.ctx)
			select {
			case <-r.ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (r *reaper) shutdown() { r.cancel() }

// dead reports whether gateway gw was found dead and reaped.
func (r *reaper) dead(gw string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, dead := r.deadGW[gw]
	return dead
}

func (r *reaper) reap(ctx context.Context) {
	stale, err := r.q.Stale(ctx, r.q.Keys.Gateways(), time.Now(), r.timeout)
	if err != nil {
		return
	}
	for _, gw := range stale {
		r.mu.Lock()
		r.deadGW[gw] = time.Now()
		r.mu.Unlock()
		n, err := r.q.ForgetGateway(ctx, gw)
		if err != nil {
			r.log.Error("reaping dead gateway failed", "gw", gw, "err", err)
			continue
		}
		r.log.Info("removed a dead gateway's sessions", "gw", gw, "n", n)
	}
}
