package main

import (
	"context"
	_ "embed"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/worker"
)

// Requests a client sends; each is answered with its cmd and sn.
const (
	CmdEcho      int32 = 1    // reply: the body
	CmdLogin     int32 = 2    // body: user id (or a token with --login-secret); then PushWelcome
	CmdJoin      int32 = 10   // body: room name; reply: the room's latest lines; PushJoined to the room
	CmdSay       int32 = 11   // body: text; reply: the line's number in the room; PushLine to the room
	CmdCountdown int32 = 12   // body: seconds (1-60); PushGo to the room when they are over
	CmdVersion   int32 = 1000 // reply: the build's version (main.version)
)

// Pushes (sn 0).
const (
	PushWelcome int32 = 100 // "welcome <uid>", to a player who logged in
	PushJoined  int32 = 101 // "<uid>", to the room a player joined
	PushLine    int32 = 102 // "<n> <uid>: <text>", to the room
	PushGo      int32 = 103 // "go", to the room when its countdown is over
)

// cmdCountdownOver is the countdown's timer frame: a System request with
// the room as body, never a client's.
const cmdCountdownOver int32 = 13

// Result codes of refused requests. A handler returns these errors and
// the client gets their Ret, with an empty body.
var (
	ErrBadRequest = &worker.Error{Ret: 1, Msg: "empty or malformed body"}
	ErrNoRoom     = &worker.Error{Ret: 2, Msg: "join a room first"}
)

// history is how many lines a room keeps for players who join.
const history = 20

// newApp returns the game's routes. Login is added by setup, since it
// depends on a flag.
func newApp() *worker.App {
	app := worker.NewApp()
	app.Route(CmdEcho, func(ctx context.Context, r *worker.Request) error {
		return r.Reply(r.Box.Body)
	})
	app.Route(CmdVersion, func(ctx context.Context, r *worker.Request) error {
		return r.Reply([]byte(version))
	})

	// Rooms are for players who logged in.
	rooms := app.Group("rooms")
	rooms.Before(func(ctx context.Context, r *worker.Request) error {
		if r.Conn.UID == "" {
			return worker.ErrLoginRequired // the client gets ret -10004
		}
		return nil
	})
	rooms.Route(CmdJoin, join)
	rooms.Route(CmdSay, say)
	rooms.Route(CmdCountdown, countdown)

	app.Route(cmdCountdownOver, countdownOver)
	app.OnClose(leave)
	return app
}

// login binds the connection to a user id: farm-wide, so a second login of
// the same user closes the older connection, wherever it is.
func login(secret []byte) worker.HandlerFunc {
	return func(ctx context.Context, r *worker.Request) error {
		var err error
		if len(secret) > 0 {
			err = r.LoginWithToken(ctx, secret, string(r.Box.Body))
		} else if uid := string(r.Box.Body); uid == "" {
			return ErrBadRequest
		} else {
			err = r.Login(ctx, uid)
		}
		if err != nil {
			return err // ret -10001; a bad token too
		}
		if err := r.Reply(nil); err != nil {
			return err
		}
		return r.Push(PushWelcome, []byte("welcome "+r.Conn.UID))
	}
}

// join moves the player into a room: out of the one it was in, into the
// room's group (which PushGroup reaches), and the room learns it.
func join(ctx context.Context, r *worker.Request) error {
	room := string(r.Box.Body)
	if room == "" || store.CheckName("room", room) != nil {
		return ErrBadRequest
	}
	uid := r.Conn.UID
	if old, err := r.Store.UserGet(ctx, uid, "room"); err == nil && old != room {
		if err := r.Store.LeaveGroup(ctx, old, uid); err != nil {
			return err
		}
	}
	if err := r.Store.JoinGroup(ctx, room, uid); err != nil {
		return err
	}
	if err := r.Store.UserSet(ctx, uid, map[string]any{"room": room}); err != nil {
		return err
	}
	linesKey, err := r.Store.Key("room", room, "lines")
	if err != nil {
		return err
	}
	lines, err := r.Store.Run(ctx, recentScript, []string{linesKey}, history).StringSlice()
	if err != nil {
		return err
	}
	if err := r.Reply([]byte(strings.Join(lines, "\n"))); err != nil {
		return err
	}
	_, err = r.PushGroup(ctx, room, PushJoined, []byte(uid))
	return err
}

// say numbers the line and keeps it in the room's history in one atomic
// step (say.lua), then pushes it to everyone in the room.
func say(ctx context.Context, r *worker.Request) error {
	room, err := roomOf(ctx, r)
	if err != nil {
		return err
	}
	line := r.Conn.UID + ": " + string(r.Box.Body)
	seqKey, err := r.Store.Key("room", room, "seq")
	if err != nil {
		return err
	}
	linesKey, err := r.Store.Key("room", room, "lines")
	if err != nil {
		return err
	}
	n, err := r.Store.Run(ctx, sayScript, []string{seqKey, linesKey}, line, history).Int64()
	if err != nil {
		return err
	}
	seq := strconv.FormatInt(n, 10)
	if err := r.Reply([]byte(seq)); err != nil {
		return err
	}
	_, err = r.PushGroup(ctx, room, PushLine, []byte(seq+" "+line))
	return err
}

// countdown starts a timer. It lives in Redis, so it fires on some live
// worker even if this one is restarted or reloaded meanwhile.
func countdown(ctx context.Context, r *worker.Request) error {
	room, err := roomOf(ctx, r)
	if err != nil {
		return err
	}
	secs, err := strconv.Atoi(string(r.Box.Body))
	if err != nil || secs < 1 || secs > 60 {
		return ErrBadRequest
	}
	if _, err := r.ScheduleAfter(ctx, time.Duration(secs)*time.Second, cmdCountdownOver, []byte(room)); err != nil {
		return err
	}
	return r.Reply(nil)
}

// countdownOver is the timer's frame: it tells the room to go.
func countdownOver(ctx context.Context, r *worker.Request) error {
	if r.Kind != worker.System {
		return worker.ErrNoRoute // timers only, not a client's to send
	}
	_, err := r.PushGroup(ctx, string(r.Box.Body), PushGo, []byte("go"))
	return err
}

// leave takes a player whose connection closed out of its room.
func leave(ctx context.Context, r *worker.Request) error {
	uid := r.Conn.UID
	if uid == "" {
		return nil
	}
	room, err := r.Store.UserGet(ctx, uid, "room")
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return r.Store.LeaveGroup(ctx, room, uid)
}

// roomOf returns the player's room, or ErrNoRoom.
func roomOf(ctx context.Context, r *worker.Request) (string, error) {
	room, err := r.Store.UserGet(ctx, r.Conn.UID, "room")
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrNoRoom
	}
	return room, err
}

// The game's own Lua scripts. Every key a script touches is a key of one
// room (Store.Key("room", id, ...)): they share the room's hash tag, so
// the scripts run on Redis Cluster too, and Store.Run checks it.
var (
	//go:embed say.lua
	saySrc    string
	sayScript = store.NewScript(saySrc)
	//go:embed recent.lua
	recentSrc    string
	recentScript = store.NewScript(recentSrc)
)
