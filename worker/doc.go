// Package worker runs a game's handlers on the frames players send, pulled
// from Redis. A worker holds no game state: state lives in Redis (package
// store, reached from a handler as Request.Store), so any number of workers
// may run, and each may be started, stopped, killed or upgraded at any
// time while players stay connected.
//
// A game is an App: handlers routed by cmd (Route, Handle), hooks around
// them (Before, After, Use), route groups with hooks of their own (Group),
// connection events (OnOpen, OnClose) and periodic jobs (Every), after
// Flask and the original maple's haven:
//
//	app := worker.NewApp()
//	app.Route(1, func(ctx context.Context, r *worker.Request) error {
//		return r.Reply(r.Box.Body)
//	})
//
// A handler answers with Reply or ReplyRet, pushes with Push, PushUsers,
// PushGroup and Broadcast, binds the player's user id with Login, sets
// timers with ScheduleAfter, and closes connections with CloseClient and
// CloseUsers. An error it returns reaches the client as a result code
// (Error; a panic answers -10001), and the worker goes on.
//
// What the farm guarantees a handler: one connection's frames run one at a
// time, in the order sent; a frame whose worker dies is run again by
// another (Request.Deliveries says how often it started), so handlers make
// their Redis changes atomic (Lua, package store) and idempotent where a
// second run would matter. docs/design.md explains how; docs/protocol.md
// is the wire contract.
//
// New and Run make a Worker of an App; a game's binary does not call them
// itself but hands the App to farm.Main, which adds the command line,
// signals (SIGTERM drains, SIGHUP reloads), metrics and stat reports.
package worker
