// Package farm makes a game's binary: one call gives the game's worker
// everything the maple binary has, so a team writes handlers and nothing
// else.
//
//	func main() {
//		app := worker.NewApp()
//		app.Route(1, func(ctx context.Context, r *worker.Request) error {
//			return r.Reply(r.Box.Body)
//		})
//		farm.Main(app, farm.Name("mygame"), farm.Version(version))
//	}
//
// The binary's commands are those of maple: dev (a whole farm in one
// process on an embedded Redis), gateway, worker, client, login-token,
// trigger, dead, stat, bench and refserver; worker and dev run the game's
// app. Every command takes the same flags and MAPLE_* environment
// variables as maple's (docs/operations.md), and the worker behaves the
// same way:
//
//   - SIGTERM or SIGINT drains: the frames in hand finish, nothing is lost.
//   - SIGHUP reloads: the process starts the binary now on disk with the
//     same arguments, waits until it pulls frames, then drains and exits.
//     Players notice nothing; the metrics port moves to the new process.
//   - --metrics-addr serves Prometheus metrics and pprof; every process
//     reports its counters to Redis for `stat`.
//   - Logs go to stderr through log/slog (--log-level, --log-format).
//   - GOGC defaults to 400 (see Main).
//
// A game adds its own flags (Flags), its own startup (Setup: read those
// flags, open what it needs, add routes), its own commands (Commands) and
// its web page (Web) through Options, without copying any of this.
// docs/guide.md builds a game this way from an empty directory to a deploy
// with reloads.
package farm
