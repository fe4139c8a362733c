package worker

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store/storetest"
)

// A worker that stopped renewing its liveness (SIGKILL) loses its
// partitions about one Liveness later, though their leases run much
// longer; one of an older release, seen only by its heartbeat and its
// leases, keeps them until the leases run out.
func TestDeadWorkersPartitionsMoveWithinLiveness(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const parts = 4
		f := newTestFarm(t, ro, parts)
		st := f.store()
		rdb := redis.NewUniversalClient(ro)
		t.Cleanup(func() { rdb.Close() })
		ctx := t.Context()

		// "ghost" holds partitions 0 and 1 for a minute and is alive for
		// 300 ms more; "old" (no liveness: an older release) holds 2 and 3
		// for a minute and heartbeats.
		for p, owner := range []string{"ghost", "ghost", "old", "old"} {
			if err := rdb.Set(ctx, st.Keys.Owner(p), owner, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := st.LiveRound(ctx, "ghost", 300*time.Millisecond, time.Minute, nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := st.Heartbeat(ctx, st.Keys.Workers(), "old", time.Now()); err != nil {
			t.Fatal(err)
		}

		start := time.Now()
		w := f.worker(NewApp(), func(o *Options) { o.Lease = time.Minute; o.Liveness = 700 * time.Millisecond })
		waitFor(t, 10*time.Second, "the ghost's partitions to move", func() bool {
			o := owners(t, st, parts)
			return o[0] == w.ID() && o[1] == w.ID()
		})
		t.Logf("the dead worker's partitions moved %v after the worker started", time.Since(start).Round(time.Millisecond))
		time.Sleep(time.Second)
		if o := owners(t, st, parts); o[2] != "old" || o[3] != "old" {
			t.Errorf("owners %q: the older release's leases, still running, were taken", o)
		}
		if n := w.Stats.Partitions.Load(); n != 2 {
			t.Errorf("the worker holds %d partitions, want the dead worker's 2", n)
		}
	})
}

// A worker that cannot renew its liveness gives every partition up before
// the other workers may take them, and takes them back once Redis answers.
func TestWorkerFencesItselfWithoutLiveness(t *testing.T) {
	m := storetest.Mini(t)
	ro := &redis.UniversalOptions{Addrs: []string{m.Addr()}}
	const parts = 4
	f := newTestFarm(t, ro, parts)
	w := f.worker(NewApp(), func(o *Options) { o.Liveness = 350 * time.Millisecond })
	waitFor(t, 5*time.Second, "the worker to take every partition", func() bool {
		return w.Stats.Partitions.Load() == parts
	})

	m.SetError("LOADING Redis is loading the dataset in memory") // every command fails
	start := time.Now()
	waitFor(t, 5*time.Second, "the worker to give its partitions up", func() bool {
		return w.Stats.Partitions.Load() == 0 && len(w.table.held()) == 0
	})
	if took := time.Since(start); took > 350*time.Millisecond+2*time.Second {
		t.Errorf("partitions given up %v after Redis went away", took)
	}
	if w.Stats.LeasesLost.Load() < parts {
		t.Errorf("LeasesLost = %d, want at least %d", w.Stats.LeasesLost.Load(), parts)
	}

	m.SetError("")
	waitFor(t, 5*time.Second, "the worker to take its partitions back", func() bool {
		return w.Stats.Partitions.Load() == parts
	})
}
