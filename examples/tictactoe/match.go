package tictactoe

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/maple-farm/maple/store"
)

// A match is one hash in Redis, Store.Key("ttt", id, "board"), that
// changes only through three scripts run with Store.Run: ttt_new.lua
// starts it, ttt_move.lua checks turns and cells and detects the winner,
// ttt_forfeit.lua ends it when a turn timer runs out or a player resigns.
// Each call answers the match as it is afterwards; ttt_get.lua reads it.

var (
	//go:embed lua/ttt_new.lua
	tttNewSrc string
	//go:embed lua/ttt_move.lua
	tttMoveSrc string
	//go:embed lua/ttt_forfeit.lua
	tttForfeitSrc string
	//go:embed lua/ttt_get.lua
	tttGetSrc string

	tttNew     = store.NewScript(tttNewSrc)
	tttMove    = store.NewScript(tttMoveSrc)
	tttForfeit = store.NewScript(tttForfeitSrc)
	tttGet     = store.NewScript(tttGetSrc)
)

// board is a match as stored.
type board struct {
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
func (m *board) Over() bool { return m.Winner != "" }

// Side returns "x" or "o" for a player of the match, "" for anyone else.
func (m *board) Side(uid string) string {
	switch uid {
	case m.X:
		return "x"
	case m.O:
		return "o"
	}
	return ""
}

// Player returns the user id playing side ("x" or "o").
func (m *board) Player(side string) string {
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
	errMatchExists = errors.New("tictactoe: match id taken")
	errMatchOver   = errors.New("tictactoe: the match is over")
	errNotPlayer   = errors.New("tictactoe: not a player of this match")
	errNotYourTurn = errors.New("tictactoe: not this player's turn")
	errBadCell     = errors.New("tictactoe: no such cell")
	errCellTaken   = errors.New("tictactoe: the cell is taken")
	errStaleTimer  = errors.New("tictactoe: the turn timer is stale: a move was made since")
)

var tttStatus = map[string]error{
	"ok":            nil,
	"exists":        errMatchExists,
	"no_match":      store.ErrNotFound,
	"over":          errMatchOver,
	"not_player":    errNotPlayer,
	"not_your_turn": errNotYourTurn,
	"bad_cell":      errBadCell,
	"taken":         errCellTaken,
	"stale":         errStaleTimer,
}

// matchTTL is how long a match is kept after it starts.
const matchTTL = 24 * time.Hour

// newMatch starts match id between x and o; x is on turn until now+turn,
// enforced by the timer with id timer (scheduled by the caller).
func newMatch(ctx context.Context, st *store.Store, id, x, o string, turn time.Duration, timer string) (board, error) {
	m, _, err := runMatch(ctx, st, tttNew, id, x, o, time.Now().UnixMilli(), turn.Milliseconds(), timer, int64(matchTTL/time.Second))
	return m, err
}

// moveMatch marks cell (0-8, row by row) for player uid. On success the
// turn passes, with a deadline of now+turn enforced by timer (scheduled by
// the caller, who cancels it on an error), and it returns the timer of the
// turn just played, which the caller cancels. Errors: store.ErrNotFound,
// errMatchOver, errNotPlayer, errNotYourTurn, errBadCell, errCellTaken;
// the match is returned with them as it is.
func moveMatch(ctx context.Context, st *store.Store, id, uid string, cell int, turn time.Duration, timer string) (m board, oldTimer string, err error) {
	return runMatch(ctx, st, tttMove, id, uid, cell, time.Now().UnixMilli(), turn.Milliseconds(), timer)
}

// forfeitMatch ends a running match, the other side winning. loser is a
// player's user id, or "" for the player on turn; atMove, if not -1, must
// equal the match's number of moves (else errStaleTimer: the timer was set
// for a turn already played). It returns the turn timer, which the caller
// cancels. Errors: store.ErrNotFound, errMatchOver, errNotPlayer,
// errStaleTimer.
func forfeitMatch(ctx context.Context, st *store.Store, id, loser string, atMove int, reason string) (m board, oldTimer string, err error) {
	return runMatch(ctx, st, tttForfeit, id, loser, atMove, reason)
}

// getMatch reads a match; store.ErrNotFound if there is none.
func getMatch(ctx context.Context, st *store.Store, id string) (board, error) {
	key, err := st.Key("ttt", id, "board")
	if err != nil {
		return board{}, err
	}
	res, err := st.Run(ctx, tttGet, []string{key}).StringSlice()
	if err != nil {
		return board{}, fmt.Errorf("tictactoe: match %q: %w", id, err)
	}
	if len(res) == 0 {
		return board{}, store.ErrNotFound
	}
	return parseMatch(id, pairs(res)), nil
}

func runMatch(ctx context.Context, st *store.Store, script *store.Script, id string, args ...any) (board, string, error) {
	key, err := st.Key("ttt", id, "board")
	if err != nil {
		return board{}, "", err
	}
	res, err := st.Run(ctx, script, []string{key}, args...).StringSlice()
	if err != nil {
		return board{}, "", fmt.Errorf("tictactoe: match %q: %w", id, err)
	}
	if len(res) < 2 || len(res)%2 != 0 {
		return board{}, "", fmt.Errorf("tictactoe: match %q: unexpected reply %q", id, res)
	}
	status, ok := tttStatus[res[0]]
	if !ok {
		return board{}, "", fmt.Errorf("tictactoe: match %q: unexpected status %q", id, res[0])
	}
	return parseMatch(id, pairs(res[2:])), res[1], status
}

// pairs makes a map of field, value, field, value...
func pairs(fv []string) map[string]string {
	h := make(map[string]string, len(fv)/2)
	for i := 0; i+1 < len(fv); i += 2 {
		h[fv[i]] = fv[i+1]
	}
	return h
}

func parseMatch(id string, h map[string]string) board {
	m := board{ID: id, X: h["x"], O: h["o"], Board: h["board"], Turn: h["turn"],
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
