package tictactoe

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"time"

	mapleclient "github.com/maple-farm/maple/clients/js"
)

//go:embed web
var webFiles embed.FS

// Web serves the game's page (web/: index.html, style.css, app.js) and
// the JavaScript client at /maple.js. Give it to gateway.Options.Web: the
// page connects to the WebSocket endpoint of the same listener (/ws, or
// the path in its ?ws= query parameter).
func Web() http.Handler {
	root, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return WebFS(root)
}

// WebFS serves the files of root, and /maple.js from clients/js unless
// root has its own (maple gateway --web-root DIR).
func WebFS(root fs.FS) http.Handler {
	files := http.FileServerFS(root)
	started := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		if r.URL.Path == "/maple.js" {
			if _, err := fs.Stat(root, "maple.js"); err != nil {
				w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
				http.ServeContent(w, r, "maple.js", started, bytes.NewReader(mapleclient.Source))
				return
			}
		}
		files.ServeHTTP(w, r)
	})
}
