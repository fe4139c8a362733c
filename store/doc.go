// Package store is a game's state in the farm's Redis: what a handler
// reaches through worker.Request.Store, and what a game's own tools open
// with Connect and New. The queues that carry frames between gateways and
// workers are the farm's business and are not here.
//
// # Sessions
//
// A logged-in user is bound to one connection, farm-wide (BindUser,
// UnbindUser; worker.Request.Login and Logout do it for a handler and
// tell the gateways). SessionOf and Sessions say where users are
// connected; a session ends when its connection closes.
//
// # Groups, users and counters
//
// A group (a room, a table, a lobby) is a set of user ids: JoinGroup,
// LeaveGroup, Members, GroupsOf. Each user has a hash of fields for the
// game (UserGet, UserGetAll, UserSet, UserIncr), and the farm keeps named
// counters (IncrCounter, Counter). User ids, group names and counter names
// are names: at most MaxNameLen bytes and without a brace (CheckName).
//
// # Timers
//
// ScheduleAfter queues a frame for the workers after a delay; its route
// runs then, once, on whichever worker is alive. CancelTimer drops it
// before it fires.
//
// # A game's own keys and Lua scripts
//
// State that must change atomically (a board and whose turn it is, a
// trade between two inventories) lives in keys the farm names, Key, and
// changes through the game's own Lua scripts, NewScript and Run:
//
//	//go:embed move.lua
//	var moveSrc string
//	var move = store.NewScript(moveSrc)
//
//	func play(ctx context.Context, r *worker.Request) error {
//		board, err := r.Store.Key("match", matchID, "board")
//		if err != nil {
//			return err
//		}
//		res, err := r.Store.Run(ctx, move, []string{board}, r.Conn.UID, cell).StringSlice()
//		...
//	}
//
// Keys of one kind and id share a hash tag, and Run refuses keys of
// different ones, on a single Redis as on a Redis Cluster, where a script
// must stay in one slot: a game that passes its tests on one server runs on
// a Cluster. examples/tictactoe keeps its matches this way.
//
// # Connecting
//
// ParseURL reads the --redis URLs of the maple commands (one server,
// Sentinel, Cluster, each with or without TLS), Connect opens a client and
// checks that the server answers, and TLSOptions carry the --redis-tls-*
// settings. IsNoPermission and PermissionError explain a Redis user whose
// ACL is too narrow (docs/security.md).
package store
