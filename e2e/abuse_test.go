package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/maple-farm/maple/bench/abuse"
)

// TestAbuse runs every attack of the abuse suite (bench/abuse, issue 11:
// "One player never hurts another") against its own farm of processes: a
// fresh redis-server, `maple gateway` and `maple worker` built from this
// tree, each stopped by pid when the subtest ends. A steady player keeps one
// echo in flight throughout (the next 5 ms after each reply, see
// abuse.DefaultSteadyGap); each subtest asserts the targets:
// the steady player gets every reply right (no wrong reply, -10002, other
// error or disconnect) with p99 <= 50 ms and max <= 1 s, plus what the
// design lets its frame wait behind, measured in the same run
// (abuse.Result.P99Limit): bigecho and noread, the time the farm took to
// carry one window of the attacker's frames in flight for a client that
// reads (abuse.BigEcho, abuse.NoRead); and for every attack, p99 plus 4 x
// the machine's noise during the attack, the p99 of how late a goroutine
// of this process wakes from 5 ms sleeps (abuse.Probe: 1.6-14 ms on a
// quiet machine, up to ~40 ms beside other packages' tests); bytes into Redis
// <= 4 x the attacker's bytes + 1 MiB; 200 half-sent 1 MiB frames raise the
// gateway's RSS by <= 128 MiB; 20,000 panics grow the worker's log by <= 2
// MiB; a new connection is answered within 1 s afterwards; and what each
// attack itself expects (its connections closed, or not dropped, ...).
//
// The same runs, as a table: scripts/abuse.sh. Attacks run one after
// another (never in parallel: they measure latency on a 2-core machine);
// the frame timeout of halfframes is 4 s here (10 s in the script), the
// rest as in the issue. About 70 s in all with -race on the project's 2-core
// machine (100 s against a build that fails every attack).
func TestAbuse(t *testing.T) {
	redisServer, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
	}
	for _, a := range abuse.Attacks(true) {
		t.Run(a.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			f, err := abuse.StartFarm(ctx, abuse.FarmOptions{
				Maple: mapleBin, RedisServer: redisServer, Dir: t.TempDir(),
				Gateway: a.Gateway, Worker: a.Worker,
			})
			if err != nil {
				t.Fatal(err)
			}
			// Registered after TempDir, so it runs first: every process is
			// stopped (by pid) before its directory goes.
			t.Cleanup(func() {
				if t.Failed() {
					for _, p := range []*abuse.Proc{f.Gateway, f.Worker} {
						t.Logf("--- tail of the %s log (pid %d):\n%s", p.Name, p.Pid(), p.LogTail(2000))
					}
				}
				f.Stop()
			})
			res := abuse.Run(ctx, f, a, abuse.RunOptions{Baseline: time.Second, After: 2 * time.Second, Progress: t.Logf})
			var details strings.Builder
			res.WriteDetails(&details)
			t.Logf("\n%s\n%s\n%s", abuse.Header(), res.Row(), details.String())
			for _, f := range res.Failures {
				t.Error(f)
			}
		})
	}
}
