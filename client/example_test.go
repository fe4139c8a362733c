package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/farm/farmtest"
)

// A request and its reply: the demo game's echo (cmd 1).
func Example() {
	f, err := farmtest.Start(demo.New()) // a farm in this process, like `maple dev`
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	ctx := context.Background()
	c, err := client.Dial(ctx, f.Addr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reply, err := c.Request(ctx, 1, []byte("hi"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("cmd=%d ret=%d body=%s\n", reply.Cmd, reply.Ret, reply.Body)
	// Output: cmd=1 ret=0 body=hi
}

// Pushes (sn 0) arrive on Pushes: here the demo's room chat, cmd 6 pushed
// to every member of the room the player joined with cmd 5.
func ExampleConn_Pushes() {
	f, err := farmtest.Start(demo.New())
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	ctx := context.Background()
	c, err := client.Dial(ctx, f.Addr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, step := range []struct {
		cmd  int32
		body string
	}{{demo.CmdLogin, "alice"}, {demo.CmdJoin, "lobby"}, {demo.CmdSay, "hello"}} {
		if r, err := c.Request(ctx, step.cmd, []byte(step.body)); err != nil || r.Ret != 0 {
			log.Fatalf("cmd %d: ret %d, %v", step.cmd, r.Ret, err)
		}
	}
	push := <-c.Pushes()
	fmt.Printf("push cmd=%d sn=%d body=%s\n", push.Cmd, push.SN, push.Body)
	// Output: push cmd=6 sn=0 body=alice: hello
}
