package tictactoe

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/redis/go-redis/v9"
)

// TestTicTacToe runs the tic-tac-toe scripts (ttt_new, ttt_move,
// ttt_forfeit, ttt_get) on real Redis and miniredis, through the public
// store API: turns, cells, lines, a draw, forfeits and stale timers.
func TestTicTacToe(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{})
	m := storetest.Mini(t)
	for _, addr := range []string{srv.Addr, m.Addr()} {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		prefix := storetest.Prefix(t)
		testTicTacToe(t, rdb, prefix, store.New(rdb, prefix))
	}
}

func testTicTacToe(t *testing.T, rdb *redis.Client, prefix string, s *store.Store) {
	{
		ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
		defer cancel()
		const turn = 30 * time.Second
		start := time.Now().UnixMilli()
		m, err := newMatch(ctx, s, "m1", "alice", "bob", turn, "t0")
		if err != nil {
			t.Fatal(err)
		}
		if m.X != "alice" || m.O != "bob" || m.Board != "........." || m.Turn != "x" || m.Moves != 0 || m.Over() || m.Timer != "t0" {
			t.Fatalf("new match: %+v", m)
		}
		if m.Deadline < start+turn.Milliseconds() || m.Deadline > time.Now().UnixMilli()+turn.Milliseconds() {
			t.Errorf("deadline %d not now+30s", m.Deadline)
		}
		if ttl := rdb.TTL(ctx, prefix+":{ttt:m1}:board").Val(); ttl <= 0 || ttl > matchTTL {
			t.Errorf("match TTL %v", ttl)
		}
		if _, err := newMatch(ctx, s, "m1", "carol", "dave", turn, "t"); !errors.Is(err, errMatchExists) {
			t.Errorf("second NewTicTacToe(m1) = %v, want errMatchExists", err)
		}

		// Refused moves change nothing.
		for _, tt := range []struct {
			uid  string
			cell int
			want error
		}{
			{"bob", 0, errNotYourTurn},
			{"mallory", 0, errNotPlayer},
			{"alice", 9, errBadCell},
			{"alice", -1, errBadCell},
		} {
			got, _, err := moveMatch(ctx, s, "m1", tt.uid, tt.cell, turn, "tx")
			if !errors.Is(err, tt.want) {
				t.Errorf("move %s %d: %v, want %v", tt.uid, tt.cell, err, tt.want)
			}
			if got.Board != "........." || got.Moves != 0 || got.Timer != "t0" {
				t.Errorf("refused move %s %d changed the match: %+v", tt.uid, tt.cell, got)
			}
		}
		if _, _, err := moveMatch(ctx, s, "nope", "alice", 0, turn, "tx"); !errors.Is(err, store.ErrNotFound) {
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
				if _, _, err := moveMatch(ctx, s, "m1", "alice", 3, turn, "tx"); !errors.Is(err, errCellTaken) {
					t.Errorf("move on a taken cell: %v, want errCellTaken", err)
				}
			}
			m, old, err := moveMatch(ctx, s, "m1", p.uid, p.cell, turn, timers[i])
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
		m, err = getMatch(ctx, s, "m1")
		if err != nil {
			t.Fatal(err)
		}
		if m.Board != "xxxoo...." || m.Winner != "x" || m.Reason != "line" || !slices.Equal(m.Line, []int{0, 1, 2}) ||
			m.Deadline != 0 || m.Timer != "" || !m.Over() || m.Player(m.Winner) != "alice" {
			t.Fatalf("won match: %+v", m)
		}
		if _, _, err := moveMatch(ctx, s, "m1", "bob", 5, turn, "tx"); !errors.Is(err, errMatchOver) {
			t.Errorf("move after the end: %v, want errMatchOver", err)
		}
		if _, _, err := forfeitMatch(ctx, s, "m1", "", -1, "timeout"); !errors.Is(err, errMatchOver) {
			t.Errorf("forfeit after the end: %v, want errMatchOver", err)
		}

		// A draw: x o x / x o o / o x x.
		if _, err := newMatch(ctx, s, "m2", "alice", "bob", turn, "d0"); err != nil {
			t.Fatal(err)
		}
		for i, cell := range []int{0, 1, 2, 4, 3, 5, 7, 6, 8} {
			uid := []string{"alice", "bob"}[i%2]
			if m, _, err = moveMatch(ctx, s, "m2", uid, cell, turn, "d"); err != nil {
				t.Fatalf("draw move %d: %v", i, err)
			}
		}
		if m.Board != "xoxxoooxx" || m.Winner != "draw" || m.Reason != "draw" || m.Line != nil {
			t.Fatalf("full board: %+v", m)
		}

		// Timeouts: a stale timer changes nothing; the current one makes
		// the player on turn lose.
		if _, err := newMatch(ctx, s, "m3", "alice", "bob", turn, "f0"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := moveMatch(ctx, s, "m3", "alice", 4, turn, "f1"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := forfeitMatch(ctx, s, "m3", "", 0, "timeout"); !errors.Is(err, errStaleTimer) {
			t.Errorf("stale timer: %v, want errStaleTimer", err)
		}
		m, old, err := forfeitMatch(ctx, s, "m3", "", 1, "timeout")
		if err != nil || old != "f1" || m.Winner != "x" || m.Reason != "timeout" || m.Deadline != 0 {
			t.Fatalf("timeout: %+v, old %q, %v", m, old, err)
		}

		// Resigning, on turn or not.
		if _, err := newMatch(ctx, s, "m4", "alice", "bob", turn, "r0"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := forfeitMatch(ctx, s, "m4", "mallory", -1, "resign"); !errors.Is(err, errNotPlayer) {
			t.Errorf("stranger resigns: %v, want errNotPlayer", err)
		}
		m, _, err = forfeitMatch(ctx, s, "m4", "bob", -1, "resign")
		if err != nil || m.Winner != "x" || m.Reason != "resign" {
			t.Fatalf("bob resigns: %+v, %v", m, err)
		}
		if _, err := getMatch(ctx, s, "none"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetTicTacToe(none) = %v, want ErrNotFound", err)
		}
	}
}
