package store

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestTicTacToe runs the tic-tac-toe scripts (ttt_new, ttt_move,
// ttt_forfeit) on real Redis and miniredis: turns, cells, lines, a draw,
// forfeits and stale timers.
func TestTicTacToe(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		const turn = 30 * time.Second
		start := time.Now().UnixMilli()
		m, err := s.NewTicTacToe(ctx, "m1", "alice", "bob", turn, "t0")
		if err != nil {
			t.Fatal(err)
		}
		if m.X != "alice" || m.O != "bob" || m.Board != "........." || m.Turn != "x" || m.Moves != 0 || m.Over() || m.Timer != "t0" {
			t.Fatalf("new match: %+v", m)
		}
		if m.Deadline < start+turn.Milliseconds() || m.Deadline > time.Now().UnixMilli()+turn.Milliseconds() {
			t.Errorf("deadline %d not now+30s", m.Deadline)
		}
		if ttl := s.rdb.TTL(ctx, s.Keys.TicTacToe("m1")).Val(); ttl <= 0 || ttl > TicTacToeTTL {
			t.Errorf("match TTL %v", ttl)
		}
		if _, err := s.NewTicTacToe(ctx, "m1", "carol", "dave", turn, "t"); !errors.Is(err, ErrMatchExists) {
			t.Errorf("second NewTicTacToe(m1) = %v, want ErrMatchExists", err)
		}

		// Refused moves change nothing.
		for _, tt := range []struct {
			uid  string
			cell int
			want error
		}{
			{"bob", 0, ErrNotYourTurn},
			{"mallory", 0, ErrNotPlayer},
			{"alice", 9, ErrBadCell},
			{"alice", -1, ErrBadCell},
		} {
			got, _, err := s.MoveTicTacToe(ctx, "m1", tt.uid, tt.cell, turn, "tx")
			if !errors.Is(err, tt.want) {
				t.Errorf("move %s %d: %v, want %v", tt.uid, tt.cell, err, tt.want)
			}
			if got.Board != "........." || got.Moves != 0 || got.Timer != "t0" {
				t.Errorf("refused move %s %d changed the match: %+v", tt.uid, tt.cell, got)
			}
		}
		if _, _, err := s.MoveTicTacToe(ctx, "nope", "alice", 0, turn, "tx"); !errors.Is(err, ErrNotFound) {
			t.Errorf("move in a missing match: %v, want ErrNotFound", err)
		}

		// x: 0, 1, 2 wins; o: 3, 4.
		timers := []string{"t1", "t2", "t3", "t4", "t5"}
		plays := []struct {
			uid  string
			cell int
		}{{"alice", 0}, {"bob", 3}, {"alice", 1}, {"bob", 4}, {"alice", 2}}
		prev := "t0"
		for i, p := range plays {
			if i == 2 {
				if _, _, err := s.MoveTicTacToe(ctx, "m1", "alice", 3, turn, "tx"); !errors.Is(err, ErrCellTaken) {
					t.Errorf("move on a taken cell: %v, want ErrCellTaken", err)
				}
			}
			m, old, err := s.MoveTicTacToe(ctx, "m1", p.uid, p.cell, turn, timers[i])
			if err != nil {
				t.Fatalf("move %d (%s %d): %v", i, p.uid, p.cell, err)
			}
			if old != prev {
				t.Errorf("move %d returned old timer %q, want %q", i, old, prev)
			}
			prev = timers[i]
			if m.Moves != i+1 {
				t.Errorf("move %d: moves %d", i, m.Moves)
			}
		}
		m, err = s.GetTicTacToe(ctx, "m1")
		if err != nil {
			t.Fatal(err)
		}
		if m.Board != "xxxoo...." || m.Winner != "x" || m.Reason != "line" || !slices.Equal(m.Line, []int{0, 1, 2}) ||
			m.Deadline != 0 || m.Timer != "" || !m.Over() || m.Player(m.Winner) != "alice" {
			t.Fatalf("won match: %+v", m)
		}
		if _, _, err := s.MoveTicTacToe(ctx, "m1", "bob", 5, turn, "tx"); !errors.Is(err, ErrMatchOver) {
			t.Errorf("move after the end: %v, want ErrMatchOver", err)
		}
		if _, _, err := s.ForfeitTicTacToe(ctx, "m1", "", -1, "timeout"); !errors.Is(err, ErrMatchOver) {
			t.Errorf("forfeit after the end: %v, want ErrMatchOver", err)
		}

		// A draw: x o x / x o o / o x x.
		if _, err := s.NewTicTacToe(ctx, "m2", "alice", "bob", turn, "d0"); err != nil {
			t.Fatal(err)
		}
		for i, cell := range []int{0, 1, 2, 4, 3, 5, 7, 6, 8} {
			uid := []string{"alice", "bob"}[i%2]
			if m, _, err = s.MoveTicTacToe(ctx, "m2", uid, cell, turn, "d"); err != nil {
				t.Fatalf("draw move %d: %v", i, err)
			}
		}
		if m.Board != "xoxxoooxx" || m.Winner != "draw" || m.Reason != "draw" || m.Line != nil {
			t.Fatalf("full board: %+v", m)
		}

		// Timeouts: a stale timer changes nothing; the current one makes
		// the player on turn lose.
		if _, err := s.NewTicTacToe(ctx, "m3", "alice", "bob", turn, "f0"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.MoveTicTacToe(ctx, "m3", "alice", 4, turn, "f1"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.ForfeitTicTacToe(ctx, "m3", "", 0, "timeout"); !errors.Is(err, ErrStaleTimer) {
			t.Errorf("stale timer: %v, want ErrStaleTimer", err)
		}
		m, old, err := s.ForfeitTicTacToe(ctx, "m3", "", 1, "timeout")
		if err != nil || old != "f1" || m.Winner != "x" || m.Reason != "timeout" || m.Deadline != 0 {
			t.Fatalf("timeout: %+v, old %q, %v", m, old, err)
		}

		// Resigning, on turn or not.
		if _, err := s.NewTicTacToe(ctx, "m4", "alice", "bob", turn, "r0"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.ForfeitTicTacToe(ctx, "m4", "mallory", -1, "resign"); !errors.Is(err, ErrNotPlayer) {
			t.Errorf("stranger resigns: %v, want ErrNotPlayer", err)
		}
		m, _, err = s.ForfeitTicTacToe(ctx, "m4", "bob", -1, "resign")
		if err != nil || m.Winner != "x" || m.Reason != "resign" {
			t.Fatalf("bob resigns: %+v, %v", m, err)
		}
		if _, err := s.GetTicTacToe(ctx, "none"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetTicTacToe(none) = %v, want ErrNotFound", err)
		}
	})
}
