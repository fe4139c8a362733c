// Package tictactoe is a small turn-based game for two on maple: players
// log in with a name (the demo's cmd 2), meet in a lobby with a chat, and
// challenge each other to tic-tac-toe. The board lives in Redis and
// changes only through the game's own Lua scripts (lua/ttt_*.lua, run
// with store.Store.Run on keys named by store.Store.Key) that check turns
// and detect the winner; a turn timer (ScheduleAfter) makes a player who
// does not move in time forfeit, on whatever worker is alive then.
//
// `maple dev` and `maple worker` run it beside the demo game's routes, and
// `maple dev` serves its web page (web/, with the JavaScript client
// clients/js/maple.js) to play it in a browser. Its routes use cmd numbers
// from 100 up; docs/tictactoe.md lists them with their bodies.
package tictactoe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/worker"
)

// Routes a client sends (requests are answered with the same cmd and sn).
const (
	CmdLobby     int32 = 100 // enter the lobby; reply: Lobby (JSON)
	CmdSay       int32 = 101 // chat in the lobby: text; everyone in it gets CmdChat
	CmdChallenge int32 = 102 // start a match against the named player; reply: Match
	CmdMove      int32 = 103 // mark a cell: "0" to "8", row by row; reply: Match
	CmdResign    int32 = 104 // give the running match up; reply: Match
	CmdState     int32 = 105 // reply: the player's latest Match, or an empty body
	CmdPlayers   int32 = 107 // reply: who is in the lobby now (Lobby, players only); pushes nothing
)

// CmdTurnTimeout is the turn timer's frame (a System request, never a
// client's): body "<match id> <moves>".
const CmdTurnTimeout int32 = 106

// Pushes (sn 0).
const (
	CmdChat     int32 = 110 // Chat (JSON), to everyone in the lobby
	CmdPresence int32 = 111 // Lobby (JSON, without Match), to everyone in the lobby
	CmdMatch    int32 = 112 // Match (JSON), to both players, after every change
)

// Result codes of refused requests (the reply body says why, in English).
const (
	RetBadRequest  int32 = 1 // an empty or malformed body
	RetUnavailable int32 = 2 // the opponent is not in the lobby, or one of you is playing
	RetNoMatch     int32 = 3 // no running match
	RetRefused     int32 = 4 // against the rules: not your turn, cell taken, match over
)

// LobbyGroup is the maple group of players in the lobby.
const LobbyGroup = "tictactoe-lobby"

// DefaultTurn is how long a player has for a move.
const DefaultTurn = 30 * time.Second

// MaxChat is the longest chat line kept, in characters.
const MaxChat = 300

// Options tune the game; the zero value is the real one.
type Options struct {
	// Turn is how long a player has for a move before forfeiting; 0
	// means DefaultTurn.
	Turn time.Duration
}

type game struct {
	turn time.Duration
}

// Register adds the game's routes and its close hook to app (which also
// needs a login route, like the demo's cmd 2).
func Register(app *worker.App, o Options) {
	g := &game{turn: o.Turn}
	if g.turn <= 0 {
		g.turn = DefaultTurn
	}
	players := app.Group("tictactoe")
	players.Before(func(ctx context.Context, r *worker.Request) error {
		if r.Conn.UID == "" {
			return worker.ErrLoginRequired
		}
		return nil
	})
	players.Route(CmdLobby, g.lobby)
	players.Route(CmdSay, g.say)
	players.Route(CmdChallenge, g.challenge)
	players.Route(CmdMove, g.move)
	players.Route(CmdResign, g.resign)
	players.Route(CmdState, g.state)
	players.Route(CmdPlayers, g.players)
	app.Route(CmdTurnTimeout, g.timeout)
	app.OnClose(g.left)
}

// Player is one player in the lobby.
type Player struct {
	Name string `json:"name"`
	Busy bool   `json:"busy"` // in a running match
}

// Lobby is who is in the lobby (and, in the CmdLobby reply, the player's
// latest match).
type Lobby struct {
	You     string   `json:"you,omitempty"`
	Players []Player `json:"players"`
	Match   *Match   `json:"match,omitempty"`
}

// Chat is one line of the lobby chat.
type Chat struct {
	From string `json:"from"`
	Text string `json:"text"`
	At   int64  `json:"at"` // unix ms
}

// Match is a match as clients see it.
type Match struct {
	ID     string `json:"id"`
	X      string `json:"x"`
	O      string `json:"o"`
	Board  string `json:"board"` // 9 cells row by row: "x", "o" or "."
	Turn   string `json:"turn"`  // "x" or "o"
	Moves  int    `json:"moves"`
	Winner string `json:"winner"` // "", "x", "o" or "draw"
	// WinnerName is the winner's user id ("" for none or a draw).
	WinnerName string `json:"winnerName"`
	Reason     string `json:"reason"` // "line", "draw", "timeout" or "resign"
	Line       []int  `json:"line"`
	// Left is the time the player on turn has left, in ms, when sent.
	Left int64 `json:"left"`
}

func matchOf(m board) *Match {
	out := &Match{ID: m.ID, X: m.X, O: m.O, Board: m.Board, Turn: m.Turn, Moves: m.Moves,
		Winner: m.Winner, WinnerName: m.Player(m.Winner), Reason: m.Reason, Line: m.Line}
	if out.Line == nil {
		out.Line = []int{}
	}
	if m.Deadline > 0 {
		out.Left = max(0, m.Deadline-time.Now().UnixMilli())
	}
	return out
}

func refuse(r *worker.Request, ret int32, msg string) error {
	return r.ReplyRet(ret, []byte(msg))
}

func replyJSON(r *worker.Request, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.Reply(b)
}

// lobby enters the lobby: the player joins the group, everyone there
// learns it, and the reply tells who is there and the player's match.
func (g *game) lobby(ctx context.Context, r *worker.Request) error {
	if err := r.Store.JoinGroup(ctx, LobbyGroup, r.Conn.UID); err != nil {
		return err
	}
	l, err := g.presence(ctx, r)
	if err != nil {
		return err
	}
	l.You = r.Conn.UID
	if m, err := g.current(ctx, r.Store, r.Conn.UID); err == nil {
		l.Match = matchOf(m)
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return replyJSON(r, l)
}

// players answers who is in the lobby now, without telling anyone else.
// A page asks it whenever a presence push comes: pushes computed by
// handlers running side by side may arrive in another order than they
// were computed, but a connection's requests run in order, so the reply
// to the request after the last push is the lobby as it is.
func (g *game) players(ctx context.Context, r *worker.Request) error {
	l, _, err := g.lobbyNow(ctx, r)
	if err != nil {
		return err
	}
	return replyJSON(r, l)
}

// presence pushes the lobby's players to everyone in it and returns them.
func (g *game) presence(ctx context.Context, r *worker.Request) (Lobby, error) {
	l, here, err := g.lobbyNow(ctx, r)
	if err != nil {
		return l, err
	}
	b, err := json.Marshal(l)
	if err != nil {
		return l, err
	}
	if _, err := r.PushUsers(ctx, here, CmdPresence, b); err != nil {
		return l, err
	}
	return l, nil
}

// lobbyNow reads who is in the lobby and online, and their user ids.
func (g *game) lobbyNow(ctx context.Context, r *worker.Request) (Lobby, []string, error) {
	uids, err := r.Store.Members(ctx, LobbyGroup)
	if err != nil {
		return Lobby{}, nil, err
	}
	online, err := r.Store.Sessions(ctx, uids)
	if err != nil {
		return Lobby{}, nil, err
	}
	l := Lobby{Players: []Player{}}
	var here []string
	for _, uid := range uids {
		if _, ok := online[uid]; !ok {
			continue // left without a close event (a dead gateway)
		}
		here = append(here, uid)
		p := Player{Name: uid}
		if m, err := g.current(ctx, r.Store, uid); err == nil {
			p.Busy = !m.Over()
		}
		l.Players = append(l.Players, p)
	}
	sort.Slice(l.Players, func(i, j int) bool { return l.Players[i].Name < l.Players[j].Name })
	return l, here, nil
}

// say pushes a chat line to everyone in the lobby.
func (g *game) say(ctx context.Context, r *worker.Request) error {
	text := strings.TrimSpace(strings.ToValidUTF8(string(r.Box.Body), "?"))
	if text == "" {
		return refuse(r, RetBadRequest, "say something")
	}
	if utf8.RuneCountInString(text) > MaxChat {
		text = string([]rune(text)[:MaxChat])
	}
	b, err := json.Marshal(Chat{From: r.Conn.UID, Text: text, At: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	if _, err := r.PushGroup(ctx, LobbyGroup, CmdChat, b); err != nil {
		return err
	}
	return r.Reply(nil)
}

// current returns uid's latest match.
func (g *game) current(ctx context.Context, st *store.Store, uid string) (board, error) {
	id, err := st.UserGet(ctx, uid, "tictactoe")
	if err != nil {
		return board{}, err
	}
	return getMatch(ctx, st, id)
}

// challenge starts a match: the challenger plays x and moves first.
func (g *game) challenge(ctx context.Context, r *worker.Request) error {
	me, them := r.Conn.UID, strings.TrimSpace(string(r.Box.Body))
	if them == "" || them == me {
		return refuse(r, RetBadRequest, "name another player")
	}
	members, err := r.Store.Members(ctx, LobbyGroup)
	if err != nil {
		return err
	}
	online, err := r.Store.Sessions(ctx, []string{them})
	if err != nil {
		return err
	}
	if _, ok := online[them]; !ok || !slices.Contains(members, them) {
		return refuse(r, RetUnavailable, them+" is not in the lobby")
	}
	for _, uid := range []string{me, them} {
		if m, err := g.current(ctx, r.Store, uid); err == nil && !m.Over() {
			return refuse(r, RetUnavailable, uid+" is playing already")
		}
	}
	n, err := r.Store.IncrCounter(ctx, "tictactoe-matches", 1)
	if err != nil {
		return err
	}
	id := "m" + strconv.FormatInt(n, 10)
	timer, err := g.schedule(ctx, r, id, 0)
	if err != nil {
		return err
	}
	m, err := newMatch(ctx, r.Store, id, me, them, g.turn, timer)
	if err != nil {
		_, _ = r.CancelTimer(ctx, timer)
		return err
	}
	for _, uid := range []string{me, them} {
		if err := r.Store.UserSet(ctx, uid, map[string]any{"tictactoe": id}); err != nil {
			return err
		}
	}
	if err := g.announce(ctx, r, m); err != nil {
		return err
	}
	if _, err := g.presence(ctx, r); err != nil {
		return err
	}
	return replyJSON(r, matchOf(m))
}

// schedule sets the turn timer of the turn after moves moves.
func (g *game) schedule(ctx context.Context, r *worker.Request, id string, moves int) (string, error) {
	return r.ScheduleAfter(ctx, g.turn, CmdTurnTimeout, fmt.Appendf(nil, "%s %d", id, moves))
}

// announce pushes the match to both players.
func (g *game) announce(ctx context.Context, r *worker.Request, m board) error {
	b, err := json.Marshal(matchOf(m))
	if err != nil {
		return err
	}
	uids := []string{m.X}
	if m.O != m.X {
		uids = append(uids, m.O)
	}
	_, err = r.PushUsers(ctx, uids, CmdMatch, b)
	return err
}

// refusal answers a move or resign the rules refused.
func refusal(r *worker.Request, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return refuse(r, RetNoMatch, "no match")
	case errors.Is(err, errNotYourTurn):
		return refuse(r, RetRefused, "not your turn")
	case errors.Is(err, errCellTaken):
		return refuse(r, RetRefused, "that cell is taken")
	case errors.Is(err, errMatchOver):
		return refuse(r, RetRefused, "the match is over")
	case errors.Is(err, errBadCell):
		return refuse(r, RetBadRequest, "cells are 0 to 8")
	case errors.Is(err, errNotPlayer):
		return refuse(r, RetRefused, "you do not play in this match")
	}
	return err
}

// move marks a cell through ttt_move.lua, which checks the turn and the
// cell and detects the end; both players get the new board.
func (g *game) move(ctx context.Context, r *worker.Request) error {
	cell, err := strconv.Atoi(strings.TrimSpace(string(r.Box.Body)))
	if err != nil {
		return refuse(r, RetBadRequest, "cells are 0 to 8")
	}
	cur, err := g.current(ctx, r.Store, r.Conn.UID)
	if errors.Is(err, store.ErrNotFound) {
		return refuse(r, RetNoMatch, "no match")
	}
	if err != nil {
		return err
	}
	if cur.Over() {
		return refuse(r, RetRefused, "the match is over")
	}
	// The next turn's timer is set first, for the move count this move
	// makes; the script records it, or it is cancelled.
	next, err := g.schedule(ctx, r, cur.ID, cur.Moves+1)
	if err != nil {
		return err
	}
	m, old, err := moveMatch(ctx, r.Store, cur.ID, r.Conn.UID, cell, g.turn, next)
	if err != nil || m.Over() {
		_, _ = r.CancelTimer(ctx, next)
	}
	if err != nil {
		return refusal(r, err)
	}
	if old != "" {
		_, _ = r.CancelTimer(ctx, old)
	}
	if err := g.announce(ctx, r, m); err != nil {
		return err
	}
	if m.Over() {
		if _, err := g.presence(ctx, r); err != nil {
			return err
		}
	}
	return replyJSON(r, matchOf(m))
}

// resign gives the running match up.
func (g *game) resign(ctx context.Context, r *worker.Request) error {
	cur, err := g.current(ctx, r.Store, r.Conn.UID)
	if errors.Is(err, store.ErrNotFound) {
		return refuse(r, RetNoMatch, "no match")
	}
	if err != nil {
		return err
	}
	m, old, err := forfeitMatch(ctx, r.Store, cur.ID, r.Conn.UID, -1, "resign")
	if err != nil {
		return refusal(r, err)
	}
	if old != "" {
		_, _ = r.CancelTimer(ctx, old)
	}
	if err := g.announce(ctx, r, m); err != nil {
		return err
	}
	if _, err := g.presence(ctx, r); err != nil {
		return err
	}
	return replyJSON(r, matchOf(m))
}

// state answers the player's latest match (after a reload or reconnect).
func (g *game) state(ctx context.Context, r *worker.Request) error {
	m, err := g.current(ctx, r.Store, r.Conn.UID)
	if errors.Is(err, store.ErrNotFound) {
		return r.Reply(nil)
	}
	if err != nil {
		return err
	}
	return replyJSON(r, matchOf(m))
}

// timeout is the turn timer: the player on turn forfeits unless a move
// was made since the timer was set.
func (g *game) timeout(ctx context.Context, r *worker.Request) error {
	if r.Kind != worker.System {
		return worker.ErrNoRoute // not a client's to send
	}
	id, n, ok := strings.Cut(string(r.Box.Body), " ")
	moves, err := strconv.Atoi(n)
	if !ok || err != nil {
		return fmt.Errorf("tictactoe: bad turn timer %q", r.Box.Body)
	}
	m, _, err := forfeitMatch(ctx, r.Store, id, "", moves, "timeout")
	switch {
	case errors.Is(err, errStaleTimer), errors.Is(err, errMatchOver), errors.Is(err, store.ErrNotFound):
		return nil // a move, a resign or the end came first
	case err != nil:
		return err
	}
	if err := g.announce(ctx, r, m); err != nil {
		return err
	}
	_, err = g.presence(ctx, r)
	return err
}

// left takes a disconnected player out of the lobby, unless the player
// is connected again elsewhere; a running match goes on (the turn timer
// ends it if the player does not come back).
func (g *game) left(ctx context.Context, r *worker.Request) error {
	uid := r.Conn.UID
	if uid == "" {
		return nil
	}
	in, err := r.Store.IsMember(ctx, LobbyGroup, uid)
	if err != nil || !in {
		return err
	}
	sess, err := r.Store.Sessions(ctx, []string{uid})
	if err != nil {
		return err
	}
	if s, ok := sess[uid]; ok && s.Conn != r.Conn.ID {
		return nil // logged in again on another connection
	}
	if err := r.Store.LeaveGroup(ctx, LobbyGroup, uid); err != nil {
		return err
	}
	// A login on another connection may have entered the lobby between
	// the check above and the leave (a gateway restart: the old
	// connection's close and the new connection's login run side by
	// side). The page logs in before it enters the lobby, so the session
	// tells: if it moved on, the player is back in the lobby.
	sess, err = r.Store.Sessions(ctx, []string{uid})
	if err != nil {
		return err
	}
	if s, ok := sess[uid]; ok && s.Conn != r.Conn.ID {
		if err := r.Store.JoinGroup(ctx, LobbyGroup, uid); err != nil {
			return err
		}
	}
	_, err = g.presence(ctx, r)
	return err
}
