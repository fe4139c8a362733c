package trigger_test

import (
	"context"
	"fmt"
	"log"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/farm/farmtest"
	"github.com/maple-farm/maple/trigger"
)

// An operator's push to one user, from Go. The same message from
// redis-cli:
//
//	PUBLISH maple:trigger '{"op":"write_to_users","uids":["alice"],"cmd":100,"body":"maintenance at 04:00"}'
func ExamplePublisher_WriteToUsers() {
	f, err := farmtest.Start(demo.New()) // a farm in this process, like `maple dev`
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()

	// A player logs in as alice (the demo's cmd 2).
	c, err := client.Dial(ctx, f.Addr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Request(ctx, demo.CmdLogin, []byte("alice")); err != nil {
		log.Fatal(err)
	}

	rdb := redis.NewClient(&redis.Options{Addr: f.Redis})
	defer rdb.Close()
	gateways, err := trigger.NewPublisher(rdb, f.Prefix).
		WriteToUsers(ctx, []string{"alice"}, 100, []byte("maintenance at 04:00"))
	if err != nil {
		log.Fatal(err)
	}
	push := <-c.Pushes()
	fmt.Printf("%d gateway got it; alice got cmd=%d body=%q\n", gateways, push.Cmd, push.Body)
	// Output: 1 gateway got it; alice got cmd=100 body="maintenance at 04:00"
}

// Parse checks a message as gateways do, and gives its body's bytes.
func ExampleParse() {
	m, body, err := trigger.Parse([]byte(`{"op":"write_to_group","group":"lobby","cmd":100,"body":"hi"}`))
	fmt.Println(m.Op, m.Group, m.Cmd, string(body), err)
	_, _, err = trigger.Parse([]byte(`{"op":"write_to_group","cmd":100}`))
	fmt.Println(err != nil)
	// Output:
	// write_to_group lobby 100 hi <nil>
	// true
}
