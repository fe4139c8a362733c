package store_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store"
)

// A game's own state: a key the farm names and a Lua script that changes
// it atomically.
func ExampleStore_Run() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	st := store.New(rdb, "")
	ctx := context.Background()

	// Add a card to a deck unless it holds it already; answer its size.
	addCard := store.NewScript(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
return redis.call('SADD', KEYS[1], ARGV[1]) + redis.call('SCARD', KEYS[1]) - 1`)

	deck, err := st.Key("deck", "ann", "cards")
	if err != nil {
		panic(err)
	}
	fmt.Println(deck)
	for _, card := range []string{"ace", "king", "ace"} {
		n, err := st.Run(ctx, addCard, []string{deck}, card).Int64()
		fmt.Println(card, n, err)
	}
	// Keys of two decks hash to two slots: refused, as a Cluster would.
	other, _ := st.Key("deck", "bob", "cards")
	err = st.Run(ctx, addCard, []string{deck, other}, "queen").Err()
	fmt.Println(errors.Is(err, store.ErrScriptKeys))
	// Output:
	// maple:{deck:ann}:cards
	// ace 1 <nil>
	// king 2 <nil>
	// ace -1 <nil>
	// true
}
