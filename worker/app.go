package worker

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Handler serves one request: a client frame, a connection's open or close
// event, or a system frame (timer, operator).
type Handler interface {
	ServeBox(ctx context.Context, r *Request) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) error

// ServeBox calls f.
func (f HandlerFunc) ServeBox(ctx context.Context, r *Request) error { return f(ctx, r) }

// Middleware wraps a handler; it must call next to continue the chain.
type Middleware func(next Handler) Handler

// App is a game: routes by cmd, hooks, and connection events. Build it
// before the worker runs; it is read-only afterwards.
//
// A request runs: app Before hooks, group Before hooks, the route's
// handler, group After hooks, app After hooks. A Before hook that returns
// an error stops the request there; the After hooks still run and see it.
type App struct {
	root    Group
	groups  []*Group
	routes  map[int32]*route
	onOpen  []HandlerFunc
	onClose []HandlerFunc
	jobs    []*job

	once     sync.Once
	chains   map[int32]Handler
	notFound Handler
}

type route struct {
	group *Group
	h     Handler
}

// Group is a set of routes with hooks of their own (haven's blueprint): a
// lobby, a table game, an admin area.
type Group struct {
	Name   string
	app    *App
	mw     []Middleware
	before []func(ctx context.Context, r *Request) error
	after  []func(ctx context.Context, r *Request, err error)
}

// NewApp returns an empty app.
func NewApp() *App {
	a := &App{routes: make(map[int32]*route)}
	a.root = Group{app: a}
	return a
}

// Route registers f for cmd. It panics if cmd is taken, like
// http.ServeMux, since two handlers for one cmd is a programming error.
func (a *App) Route(cmd int32, f HandlerFunc) { a.root.Handle(cmd, f) }

// Handle registers h for cmd.
func (a *App) Handle(cmd int32, h Handler) { a.root.Handle(cmd, h) }

// Use adds middleware around every route of the app.
func (a *App) Use(m ...Middleware) { a.root.Use(m...) }

// Before adds a hook run before every route's handler: client frames and
// System frames (timers, operators), not connection events or periodic
// jobs, which have handlers of their own. Returning an error stops the
// request: an *Error is answered with its Ret, ErrStop is
// not answered (the hook may have replied itself), any other error is
// answered -10001.
func (a *App) Before(f func(ctx context.Context, r *Request) error) { a.root.Before(f) }

// After adds a hook run after every request, with the error that ended it
// (nil on success). After hooks run even when a Before hook or the handler
// failed or panicked.
func (a *App) After(f func(ctx context.Context, r *Request, err error)) { a.root.After(f) }

// OnOpen adds a handler for a new connection (Request.Kind == Open).
func (a *App) OnOpen(f HandlerFunc) { a.onOpen = append(a.onOpen, f) }

// OnClose adds a handler for a closed connection (maple's close_client);
// it runs after every frame of that connection was handled.
func (a *App) OnClose(f HandlerFunc) { a.onClose = append(a.onClose, f) }

// job is a periodic job declared with Every.
type job struct {
	name   string
	period time.Duration
	f      HandlerFunc
}

// Every declares a periodic job: once per period across the whole farm,
// not once per worker, f runs on some live worker as a request of Kind Job
// (Box.Body holds the job's name). Periods are aligned to the Unix epoch.
// A period is claimed in Redis and queued like a frame, so a run whose
// worker dies is taken over like any other frame. name must be unique.
func (a *App) Every(name string, period time.Duration, f HandlerFunc) {
	if period <= 0 || name == "" {
		panic("worker: Every needs a name and a positive period")
	}
	for _, j := range a.jobs {
		if j.name == name {
			panic(fmt.Sprintf("worker: job %q declared twice", name))
		}
	}
	a.jobs = append(a.jobs, &job{name: name, period: period, f: f})
}

// Group returns a new route group of the app.
func (a *App) Group(name string) *Group {
	g := &Group{Name: name, app: a}
	a.groups = append(a.groups, g)
	return g
}

// Route registers f for cmd in the group.
func (g *Group) Route(cmd int32, f HandlerFunc) { g.Handle(cmd, f) }

// Handle registers h for cmd in the group; it panics if cmd is taken.
func (g *Group) Handle(cmd int32, h Handler) {
	if h == nil {
		panic("worker: nil handler")
	}
	if old, ok := g.app.routes[cmd]; ok {
		panic(fmt.Sprintf("worker: cmd %d registered twice (group %q and %q)", cmd, old.group.Name, g.Name))
	}
	g.app.routes[cmd] = &route{group: g, h: h}
}

// Use adds middleware around the group's routes.
func (g *Group) Use(m ...Middleware) { g.mw = append(g.mw, m...) }

// Before adds a hook run before the group's routes (after the app's).
func (g *Group) Before(f func(ctx context.Context, r *Request) error) {
	g.before = append(g.before, f)
}

// After adds a hook run after the group's routes (before the app's).
func (g *Group) After(f func(ctx context.Context, r *Request, err error)) {
	g.after = append(g.after, f)
}

// wrap puts the group's hooks and middleware around h.
func (g *Group) wrap(h Handler) Handler {
	for i := len(g.mw) - 1; i >= 0; i-- {
		h = g.mw[i](h)
	}
	if len(g.before) == 0 && len(g.after) == 0 {
		return h
	}
	before, after := g.before, g.after
	return HandlerFunc(func(ctx context.Context, r *Request) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = &panicError{value: p, stack: stack()}
			}
			for i := range after {
				after[i](ctx, r, err)
			}
		}()
		for _, f := range before {
			if err = f(ctx, r); err != nil {
				return err
			}
		}
		return h.ServeBox(ctx, r)
	})
}

// build composes every route's chain once, when the worker starts.
func (a *App) build() {
	a.once.Do(func() {
		a.chains = make(map[int32]Handler, len(a.routes))
		for cmd, rt := range a.routes {
			h := rt.h
			if rt.group != &a.root {
				h = rt.group.wrap(h)
			}
			a.chains[cmd] = a.root.wrap(h)
		}
		a.notFound = a.root.wrap(HandlerFunc(func(ctx context.Context, r *Request) error {
			return ErrNoRoute
		}))
	})
}

// ServeBox dispatches r to its route, so an App is itself a Handler.
func (a *App) ServeBox(ctx context.Context, r *Request) error {
	a.build()
	switch r.Kind {
	case Open:
		return runAll(ctx, r, a.onOpen)
	case Close:
		return runAll(ctx, r, a.onClose)
	case Job:
		name := string(r.Box.Body)
		for _, j := range a.jobs {
			if j.name == name {
				return j.f(ctx, r)
			}
		}
		return fmt.Errorf("worker: no periodic job %q in this app", name)
	}
	if h, ok := a.chains[r.Box.Cmd]; ok {
		return h.ServeBox(ctx, r)
	}
	return a.notFound.ServeBox(ctx, r)
}

func runAll(ctx context.Context, r *Request, fs []HandlerFunc) error {
	var first error
	for _, f := range fs {
		if err := f(ctx, r); err != nil && first == nil {
			first = err
		}
	}
	return first
}
