// Package gateway holds the players' connections, TCP and WebSocket (one
// Box frame per binary message) alike, on one event loop
// (github.com/tidwall/evio), with no goroutine per connection. It cuts the
// byte stream or the messages into frames, queues them in Redis for
// the workers and writes back their replies and pushes. It runs no game
// logic and never waits on Redis in its event loop, so a slow Redis slows
// frames down but never stalls the connections.
//
// The gateway is where players are bounded: frame size, frames in flight
// per connection, connections per address, half-sent frames, idle
// connections and slow readers each have a limit (Options, and
// docs/operations.md "Limits and abuse"); past a limit the client gets a
// result code or is closed, never another player.
//
// It also listens for operator triggers (package trigger) on Redis pub/sub
// and acts on its own connections. On SIGTERM with Options.DrainTimeout it
// tells each connection to move (box.CmdMove) and closes it once its
// frames are answered, so a gateway can be rolled under load
// (docs/operations.md).
//
// Most programs run it through `maple gateway` or a game's farm.Main;
// New and Run embed it.
package gateway
