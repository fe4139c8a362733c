// Command hopfloor measures the floor that two Redis hops put under a
// farm's 1 conn x 1 latency on this machine: the "gateway" XADDs to a
// stream, the "worker", blocked in XREADGROUP, wakes and LPUSHes the
// reply, and the "gateway", blocked in BLMOVE, wakes with it. No frames,
// no event loop, no handler: only the two Redis round trips and the two
// blocked readers waking (docs/benchmarks.md, "Against the targets").
//
//	go run ./scripts/hopfloor --redis 127.0.0.1:6379 --n 3000
//
// It prints p50, p90, p99, p99.9 and max of the round trips, in ms, and
// deletes its keys.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("redis", "127.0.0.1:6379", "redis address")
	n := flag.Int("n", 3000, "round trips measured")
	warm := flag.Int("warmup", 300, "round trips before measuring")
	dur := flag.Duration("duration", 0, "measure for this long instead of --n round trips")
	flag.Parse()
	ctx := context.Background()
	key := fmt.Sprintf("hopfloor:%d", time.Now().UnixNano())
	stream, out, transit := key+":in", key+":out", key+":transit"
	gw := redis.NewClient(&redis.Options{Addr: *addr})    // XADD
	block := redis.NewClient(&redis.Options{Addr: *addr}) // BLMOVE
	wk := redis.NewClient(&redis.Options{Addr: *addr})    // XREADGROUP, LPUSH
	defer gw.Del(ctx, stream, out, transit)
	if err := gw.XGroupCreateMkStream(ctx, stream, "w", "$").Err(); err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			res, err := wk.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "w", Consumer: "c", Streams: []string{stream, ">"}, Count: 16, Block: 0}).Result()
			if err != nil {
				log.Fatal(err)
			}
			pipe := wk.Pipeline()
			for _, s := range res {
				for _, m := range s.Messages {
					pipe.LPush(ctx, out, m.Values["b"])
					pipe.XAck(ctx, stream, "w", m.ID)
				}
			}
			if _, err := pipe.Exec(ctx); err != nil {
				log.Fatal(err)
			}
		}
	}()
	var lat []time.Duration
	start := time.Now()
	for i := 0; ; i++ {
		if *dur > 0 {
			if i >= *warm && time.Since(start) > *dur {
				break
			}
		} else if i >= *warm+*n {
			break
		}
		if i == *warm {
			start = time.Now()
		}
		t0 := time.Now()
		if err := gw.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"b", "x"}}).Err(); err != nil {
			log.Fatal(err)
		}
		if err := block.BLMove(ctx, out, transit, "RIGHT", "RIGHT", 0).Err(); err != nil {
			log.Fatal(err)
		}
		if i >= *warm {
			lat = append(lat, time.Since(t0))
		}
		if i%256 == 0 {
			gw.Del(ctx, transit)
			gw.XTrimMaxLen(ctx, stream, 16)
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	fmt.Printf("hopfloor: %d round trips: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f ms\n",
		len(lat), q(0.5), q(0.9), q(0.99), q(0.999), q(1))
}
