// Command abuse runs maple's abuse suite (bench/abuse, issue 11) against a
// built maple binary: for each attack a fresh redis-server, `maple
// gateway` and `maple worker` (processes, logs in --logs), a steady player
// throughout, and one table row. It exits 1 if any attack misses a target.
//
//	go build -o /tmp/maple ./cmd/maple
//	go run ./scripts/abuse --maple /tmp/maple [--only pipeline,panics] [--short]
//
// scripts/abuse.sh does both steps.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/maple-farm/maple/bench/abuse"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		maple       = flag.String("maple", "", "path of the maple binary under test (required)")
		only        = flag.String("only", "", "run only these attacks (comma-separated names); empty: all")
		redisServer = flag.String("redis-server", "redis-server", "redis-server binary")
		logs        = flag.String("logs", "", "directory for each farm's logs (default: a new temp dir, kept)")
		short       = flag.Bool("short", false, "shorter timeouts where the measure still means the same (as the e2e tests)")
		after       = flag.Duration("after", abuse.DefaultAfter, "how long the steady player goes on after each attack")
		baseline    = flag.Duration("baseline", abuse.DefaultBaseline, "how long the steady player runs alone before each attack")
		gap         = flag.Duration("steady-gap", abuse.DefaultSteadyGap, "the steady player's pause between a reply and its next request (0: back to back)")
		list        = flag.Bool("list", false, "list the attacks and exit")
	)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: abuse --maple PATH [flags]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	attacks := abuse.Attacks(*short)
	if *list {
		for _, a := range attacks {
			fmt.Printf("%-11s %s  %s\n", a.Name, a.Issue, a.What)
		}
		return 0
	}
	if *maple == "" || flag.NArg() > 0 {
		flag.Usage()
		return 2
	}
	if *only != "" {
		want := map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			want[strings.TrimSpace(n)] = true
		}
		var picked []abuse.Attack
		for _, a := range attacks {
			if want[a.Name] {
				picked = append(picked, a)
				delete(want, a.Name)
			}
		}
		if len(want) > 0 {
			var names []string
			for n := range want {
				names = append(names, n)
			}
			fmt.Fprintf(os.Stderr, "abuse: no attack named %s (see --list)\n", strings.Join(names, ", "))
			return 2
		}
		attacks = picked
	}
	bin, err := filepath.Abs(*maple)
	if err != nil {
		fmt.Fprintln(os.Stderr, "abuse:", err)
		return 2
	}
	dir := *logs
	if dir == "" {
		if dir, err = os.MkdirTemp("", "maple-abuse-"); err != nil {
			fmt.Fprintln(os.Stderr, "abuse:", err)
			return 2
		}
	}

	steadyGap := *gap
	if steadyGap == 0 {
		steadyGap = -1 // RunOptions: negative is back to back
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "abuse: "+format+"\n", args...)
	}

	var results []abuse.Result
	fmt.Println(abuse.Header())
	for _, a := range attacks {
		if ctx.Err() != nil {
			break
		}
		res, err := runOne(ctx, a, bin, *redisServer, filepath.Join(dir, a.Name),
			abuse.RunOptions{Baseline: *baseline, After: *after, SteadyGap: steadyGap, Progress: progress})
		if err != nil {
			progress("%s: %v", a.Name, err)
			res = abuse.Result{Attack: a, Failures: []string{err.Error()}}
		}
		results = append(results, res)
		fmt.Println(res.Row())
	}
	fmt.Println()
	failed := 0
	for _, r := range results {
		r.WriteDetails(os.Stdout)
		if !r.Pass() {
			failed++
		}
	}
	fmt.Printf("\n%d of %d attacks passed; logs in %s\n", len(results)-failed, len(results), dir)
	if failed > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

// runOne starts a farm for a, runs it, and stops the farm by pid.
func runOne(ctx context.Context, a abuse.Attack, maple, redisServer, dir string, o abuse.RunOptions) (abuse.Result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return abuse.Result{}, err
	}
	start := time.Now()
	f, err := abuse.StartFarm(ctx, abuse.FarmOptions{
		Maple: maple, RedisServer: redisServer, Dir: dir,
		Gateway: a.Gateway, Worker: a.Worker,
	})
	if err != nil {
		return abuse.Result{}, fmt.Errorf("farm: %w", err)
	}
	defer f.Stop()
	o.Progress("%s: farm up in %v (gateway %s, pid %d; worker pid %d; redis %s, pid %d)",
		a.Name, time.Since(start).Round(time.Millisecond), f.Addr, f.Gateway.Pid(), f.Worker.Pid(), f.Redis.Addr, f.Redis.Pid())
	return abuse.Run(ctx, f, a, o), nil
}
