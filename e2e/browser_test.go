package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/maple-farm/maple/examples/tictactoe"
	"github.com/maple-farm/maple/gateway"
)

// The browser test plays the tic-tac-toe page (examples/tictactoe/web) in
// a real headless Chromium: two pages, two players, the lobby chat, a
// match to a win, and a worker restart in the middle of it that neither
// page notices; then a gateway restart, which both pages ride out by
// reconnecting and logging in again. Debian's chromium package is the browser (.ci/run installs
// it); MAPLE_CHROME names another binary. Without a browser the test is
// skipped, except under CI (CI=true), where it fails.
//
// MAPLE_UPDATE_SCREENSHOT=1 also writes the final boards of both pages,
// side by side, to docs/demo.png (the README's screenshot).

// chromeBinary finds a Chromium.
func chromeBinary() string {
	if p := os.Getenv("MAPLE_CHROME"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// noBrowser skips the test, or fails it under CI, where a browser must be.
func noBrowser(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("no browser under CI: %s (.ci/run installs Debian's chromium; MAPLE_CHROME names another)", why)
	}
	t.Skipf("no browser: %s (apt-get install chromium, or set MAPLE_CHROME)", why)
}

// startBrowser launches headless Chromium with a fresh profile and returns
// the browser's context; it stops when the test ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	bin := chromeBinary()
	if bin == "" {
		noBrowser(t, "no chromium, chromium-browser or google-chrome on the PATH")
	}
	out := &lockedWriter{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1060, 760),
		chromedp.CombinedOutput(out),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(browser) }() // launches the browser
	select {
	case err := <-started:
		if err != nil {
			noBrowser(t, fmt.Sprintf("%s did not start: %v; its output:\n%s", bin, err, out.String()))
		}
	case <-time.After(60 * time.Second):
		noBrowser(t, bin+" did not start in 60s; its output:\n"+out.String())
	}
	return browser
}

// lockedWriter collects the browser's output while it runs.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// page is one browser tab playing as one player.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context
}

func newPage(t *testing.T, browser context.Context, name string) *page {
	t.Helper()
	// Its own browser context: its own storage, like another person's browser.
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1000, 700)); err != nil {
		t.Fatalf("%s: new tab: %v", name, err)
	}
	return &page{t: t, name: name, ctx: ctx}
}

// do runs steps on the page within 30 s.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %s: %v\npage state: %s", p.name, what, err, p.describe())
	}
}

// wait polls a JavaScript predicate on the page until it holds.
func (p *page) wait(what, predicate string) {
	p.t.Helper()
	p.do("wait for "+what, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))(ctx, t)
		return err
	}))
}

func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("%s: evaluate %s: %v", p.name, expr, err)
	}
	return v
}

// describe sums the page up for a failure message.
func (p *page) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](strings.Replace(`JSON.stringify({
		conn: document.getElementById('conn')?.dataset.state,
		connects: document.body.dataset.connects,
		players: [...document.querySelectorAll('#players li')].map(li => li.dataset.name),
		board: boardOf(), match: document.getElementById('match')?.dataset,
		status: document.getElementById('status')?.textContent,
		toast: document.getElementById('toast')?.textContent,
	})`, "boardOf()", boardJS, 1)))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return v
}

// boardJS reads the board from the DOM, like "xx.o.....".
const boardJS = `[...document.querySelectorAll('#board .cell')].map(c => c.dataset.mark || '.').join('')`

func (p *page) board() string { return p.eval(boardJS) }

func (p *page) waitBoard(want string) {
	p.t.Helper()
	p.wait("board "+want, boardJS+` === '`+want+`'`)
}

func (p *page) click(what, css string) {
	p.t.Helper()
	p.do("click "+what, chromedp.WaitEnabled(chromedp.CSS(css)), chromedp.Click(chromedp.CSS(css)))
}

func (p *page) screenshot() []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	return b
}

// TestBrowserTicTacToe: two browser pages log in, chat in the lobby and
// play tic-tac-toe to a win through the WebSocket gateway; the worker is
// restarted mid-game and the game goes on without either page
// reconnecting; both pages show the same winner. After a gateway restart
// both pages reconnect, log in again and show the board again.
func TestBrowserTicTacToe(t *testing.T) {
	browser := startBrowser(t)
	f := newFarm(t, realRedis(t))
	gw, stopGW := startWebGateway(t, f, "127.0.0.1:0")
	app := func() { f.worker(tttApp(0), nil) }
	w := f.worker(tttApp(0), nil)
	url := "http://" + gw.WSAddr().String() + "/"
	start := time.Now()

	alice := newPage(t, browser, "alice")
	bob := newPage(t, browser, "bob")
	for _, p := range []*page{alice, bob} {
		p.do("open the page", chromedp.Navigate(url))
		p.wait("connected", `document.getElementById('conn').dataset.state === 'open'`)
		p.do("log in",
			chromedp.WaitVisible(chromedp.ID("name")),
			chromedp.SendKeys(chromedp.ID("name"), p.name),
			chromedp.Click(chromedp.ID("login-btn")),
			chromedp.WaitVisible(chromedp.ID("lobby-view")),
		)
	}
	const twoInLobby = `[...document.querySelectorAll('#players li')].map(li => li.dataset.name).join() === 'alice,bob'`
	alice.wait("both in the lobby", twoInLobby)
	bob.wait("both in the lobby", twoInLobby)

	// The lobby chat, both ways.
	say := func(p *page, text string) {
		p.do("say "+text, chromedp.SendKeys(chromedp.ID("chat-input"), text), chromedp.Click(chromedp.ID("chat-send")))
	}
	heard := func(from, text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#chat-log .msg')].some(m => m.dataset.from === %q && m.querySelector('.text').textContent === %q)`, from, text)
	}
	say(alice, "hi bob, a game?")
	bob.wait("alice's message", heard("alice", "hi bob, a game?"))
	say(bob, "sure, you start")
	alice.wait("bob's message", heard("bob", "sure, you start"))
	alice.wait("own messages", heard("alice", "hi bob, a game?")+" && "+heard("bob", "sure, you start"))

	// alice challenges bob and plays x.
	alice.click("challenge bob", `#players li[data-name="bob"] button.challenge`)
	for _, p := range []*page{alice, bob} {
		p.wait("the match", `document.getElementById('match').dataset.state === 'playing'`)
	}
	move := func(p *page, cell int, board string) {
		t.Helper()
		p.click(fmt.Sprintf("cell %d", cell), fmt.Sprintf(`#board .cell[data-cell="%d"]`, cell))
		alice.waitBoard(board)
		bob.waitBoard(board)
	}
	move(alice, 0, "x........")
	move(bob, 3, "x..o.....")
	move(alice, 1, "xx.o.....")

	// The worker restarts (SIGTERM-equivalent: its ctx is cancelled and it
	// drains). bob moves while no worker runs: the frame waits in Redis.
	w.stop()
	bob.click("cell 4", `#board .cell[data-cell="4"]`)
	time.Sleep(300 * time.Millisecond)
	if got := alice.board(); got != "xx.o....." {
		t.Fatalf("a move was applied with no worker running: %s", got)
	}
	app()
	alice.waitBoard("xx.oo....")
	bob.waitBoard("xx.oo....")
	move(alice, 2, "xxxoo....")

	// Both pages show the same winner and the winning line.
	for _, p := range []*page{alice, bob} {
		p.wait("the winner", `document.getElementById('match').dataset.winner === 'alice'`)
		if got := p.eval(`[...document.querySelectorAll('#board .cell.win')].map(c => c.dataset.cell).join()`); got != "0,1,2" {
			t.Errorf("%s: winning cells %q, want 0,1,2", p.name, got)
		}
		// No page reconnected: one connection each, still open.
		if got := p.eval(`document.body.dataset.connects + ' ' + document.getElementById('conn').dataset.state`); got != "1 open" {
			t.Errorf("%s: connections opened and state %q, want \"1 open\" (the page reconnected)", p.name, got)
		}
	}
	if got := alice.eval(`document.getElementById('status').textContent`); got != "You win!" {
		t.Errorf("alice's status %q", got)
	}
	if got := bob.eval(`document.getElementById('status').textContent`); got != "alice wins!" {
		t.Errorf("bob's status %q", got)
	}
	if n := gw.Stats.Accepted.Load(); n != 2 {
		t.Errorf("the gateway accepted %d connections, want 2", n)
	}

	// Screenshots of the final boards.
	shots := [][]byte{alice.screenshot(), bob.screenshot()}
	dir := t.TempDir()
	path := filepath.Join(dir, "board.png")
	if err := os.WriteFile(path, shots[0], 0o644); err != nil {
		t.Fatal(err)
	}
	img := checkPNG(t, path)
	t.Logf("played in %v; final board %dx%d at %s", time.Since(start).Round(time.Millisecond), img.Bounds().Dx(), img.Bounds().Dy(), path)
	if os.Getenv("MAPLE_UPDATE_SCREENSHOT") != "" {
		both := sideBySide(t, shots)
		out := filepath.Join("..", "docs", "demo.png")
		if err := os.WriteFile(out, both, 0o644); err != nil {
			t.Fatal(err)
		}
		checkPNG(t, out)
		t.Logf("wrote %s", out)
	}

	// Now the gateway restarts: the pages show it, reconnect with backoff,
	// log in again from the client's onOpen hook and find the board.
	wsAddr := gw.WSAddr().String()
	stopGW()
	for _, p := range []*page{alice, bob} {
		p.wait("reconnecting", `document.getElementById('conn').dataset.state === 'reconnecting'`)
	}
	startWebGateway(t, f, wsAddr)
	for _, p := range []*page{alice, bob} {
		p.wait("reconnected", `document.body.dataset.connects === '2' && document.getElementById('conn').dataset.state === 'open'`)
		p.wait("back in the lobby", twoInLobby)
		p.waitBoard("xxxoo....")
		p.wait("the winner", `document.getElementById('match').dataset.winner === 'alice'`)
	}
	say(bob, "rematch?")
	alice.wait("bob's message after the reconnect", heard("bob", "rematch?"))
}

// startWebGateway starts a gateway with a WebSocket listener on wsAddr
// serving the tic-tac-toe page; stop (also run when the test ends) stops
// it.
func startWebGateway(t *testing.T, f *farm, wsAddr string) (gw *gateway.Server, stop func()) {
	t.Helper()
	gw, err := gateway.New(gateway.Options{Listen: "127.0.0.1:0", WSListen: wsAddr, Web: tictactoe.Web(),
		Redis: f.ro, Prefix: f.prefix, Logger: logger(t), CloseGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gateway stopped with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-gw.Ready():
	case err := <-done:
		t.Fatalf("gateway did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not start in 10s")
	}
	return gw, stop
}

// checkPNG checks that path is a non-empty PNG and returns it.
func checkPNG(t *testing.T, path string) image.Image {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("%s: %d bytes, not a PNG", path, len(b))
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r := img.Bounds(); r.Dx() < 200 || r.Dy() < 200 {
		t.Fatalf("%s: %dx%d, too small", path, r.Dx(), r.Dy())
	}
	return img
}

// sideBySide puts PNG screenshots next to each other, 16 px apart.
func sideBySide(t *testing.T, shots [][]byte) []byte {
	t.Helper()
	var imgs []image.Image
	w, h := 0, 0
	const gap = 16
	for _, s := range shots {
		img, err := png.Decode(bytes.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
		w += img.Bounds().Dx() + gap
		h = max(h, img.Bounds().Dy())
	}
	out := image.NewRGBA(image.Rect(0, 0, w-gap, h))
	draw.Draw(out, out.Bounds(), image.NewUniform(color.RGBA{0xe4, 0xda, 0xcc, 0xff}), image.Point{}, draw.Src)
	x := 0
	for _, img := range imgs {
		draw.Draw(out, image.Rect(x, 0, x+img.Bounds().Dx(), img.Bounds().Dy()), img, img.Bounds().Min, draw.Src)
		x += img.Bounds().Dx() + gap
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, out); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
