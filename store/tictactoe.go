package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The tic-tac-toe example's matches (examples/tictactoe). A match is one
// hash (Keys.TicTacToe) that changes only through three scripts:
// ttt_new.lua starts it, ttt_move.lua checks turns and cells and detects
// the winner, ttt_forfeit.lua ends it when a turn timer runs out or a
// player resigns. Each call answers the match as it is afterwards.

// TicTacToe is a match as stored.
type TicTacToe struct {
	ID     string
	X, O   string // the players' user ids; X moves first
	Board  string // 9 cells row by row: 'x', 'o' or '.'
	Turn   string // "x" or "o": who moves next (while not over)
	Moves  int
	Winner string // "" while it runs; then "x", "o" or "draw"
	Reason string // how it ended: "line", "draw", "timeout" or "resign"
	Line   []int  // the cells of the winning line, if any
	// Deadline is when the player on turn forfeits (unix ms); 0 once over.
	Deadline int64
	// Timer is the id of the turn timer that enforces Deadline.
	Timer string
}

// Over reports whether the match has ended.
func (m *TicTacToe) Over() bool { return m.Winner != "" }

// Side returns "x" or "o" for a player of the match, "" for anyone else.
func (m *TicTacToe) Side(uid string) string {
	switch uid {
	case m.X:
		return "x"
	case m.O:
		return "o"
	}
	return ""
}

// Player returns the user id playing side ("x" or "o").
func (m *TicTacToe) Player(side string) string {
	switch side {
	case "x":
		return m.X
	case "o":
		return m.O
	}
	return ""
}

// Why a move or a forfeit changed nothing.
var (
	ErrMatchExists = errors.New("store: match id taken")
	ErrMatchOver   = errors.New("store: the match is over")
	ErrNotPlayer   = errors.New("store: not a player of this match")
	ErrNotYourTurn = errors.New("store: not this player's turn")
	ErrBadCell     = errors.New("store: no such cell")
	ErrCellTaken   = errors.New("store: the cell is taken")
	ErrStaleTimer  = errors.New("store: the turn timer is stale: a move was made since")
)

var tttStatus = map[string]error{
	"ok":            nil,
	"exists":        ErrMatchExists,
	"no_match":      ErrNotFound,
	"over":          ErrMatchOver,
	"not_player":    ErrNotPlayer,
	"not_your_turn": ErrNotYourTurn,
	"bad_cell":      ErrBadCell,
	"taken":         ErrCellTaken,
	"stale":         ErrStaleTimer,
}

// TicTacToeTTL is how long a match is kept after it starts.
const TicTacToeTTL = 24 * time.Hour

// NewTicTacToe starts match id between x and o; x is on turn until
// now+turn, enforced by the timer with id timer (scheduled by the caller).
func (s *Store) NewTicTacToe(ctx context.Context, id, x, o string, turn time.Duration, timer string) (TicTacToe, error) {
	m, _, err := s.runTicTacToe(ctx, scriptTTTNew, id, x, o, time.Now().UnixMilli(), turn.Milliseconds(), timer, int64(TicTacToeTTL/time.Second))
	return m, err
}

// MoveTicTacToe marks cell (0-8, row by row) for player uid. On success the
// turn passes, with a deadline of now+turn enforced by timer (scheduled by
// the caller, who cancels it on an error), and it returns the timer of the
// turn just played, which the caller cancels. Errors: ErrNotFound,
// ErrMatchOver, ErrNotPlayer, ErrNotYourTurn, ErrBadCell, ErrCellTaken;
// the match is returned with them as it is.
func (s *Store) MoveTicTacToe(ctx context.Context, id, uid string, cell int, turn time.Duration, timer string) (m TicTacToe, oldTimer string, err error) {
	return s.runTicTacToe(ctx, scriptTTTMove, id, uid, cell, time.Now().UnixMilli(), turn.Milliseconds(), timer)
}

// ForfeitTicTacToe ends a running match, the other side winning. loser is
// a player's user id, or "" for the player on turn; atMove, if not -1,
// must equal the match's number of moves (else ErrStaleTimer: the timer
// was set for a turn already played). It returns the turn timer, which the
// caller cancels. Errors: ErrNotFound, ErrMatchOver, ErrNotPlayer,
// ErrStaleTimer.
func (s *Store) ForfeitTicTacToe(ctx context.Context, id, loser string, atMove int, reason string) (m TicTacToe, oldTimer string, err error) {
	return s.runTicTacToe(ctx, scriptTTTForfeit, id, loser, atMove, reason)
}

// GetTicTacToe reads a match; ErrNotFound if there is none.
func (s *Store) GetTicTacToe(ctx context.Context, id string) (TicTacToe, error) {
	h, err := s.rdb.HGetAll(ctx, s.Keys.TicTacToe(id)).Result()
	if err != nil {
		return TicTacToe{}, fmt.Errorf("store: match %q: %w", id, err)
	}
	if len(h) == 0 {
		return TicTacToe{}, ErrNotFound
	}
	return parseTicTacToe(id, h), nil
}

func (s *Store) runTicTacToe(ctx context.Context, script *redis.Script, id string, args ...any) (TicTacToe, string, error) {
	res, err := script.Run(ctx, s.rdb, []string{s.Keys.TicTacToe(id)}, args...).StringSlice()
	if err != nil {
		return TicTacToe{}, "", fmt.Errorf("store: match %q: %w", id, err)
	}
	if len(res) < 2 || len(res)%2 != 0 {
		return TicTacToe{}, "", fmt.Errorf("store: match %q: unexpected reply %q", id, res)
	}
	status, ok := tttStatus[res[0]]
	if !ok {
		return TicTacToe{}, "", fmt.Errorf("store: match %q: unexpected status %q", id, res[0])
	}
	h := make(map[string]string, (len(res)-2)/2)
	for i := 2; i+1 < len(res); i += 2 {
		h[res[i]] = res[i+1]
	}
	return parseTicTacToe(id, h), res[1], status
}

func parseTicTacToe(id string, h map[string]string) TicTacToe {
	m := TicTacToe{ID: id, X: h["x"], O: h["o"], Board: h["board"], Turn: h["turn"],
		Winner: h["winner"], Reason: h["reason"], Timer: h["timer"]}
	m.Moves, _ = strconv.Atoi(h["moves"])
	m.Deadline, _ = strconv.ParseInt(h["deadline"], 10, 64)
	if h["line"] != "" {
		for _, c := range strings.Split(h["line"], ",") {
			n, _ := strconv.Atoi(c)
			m.Line = append(m.Line, n)
		}
	}
	return m
}
