package tictactoe

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/maple-farm/maple/farm"
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
	return farm.WebFS(root)
}
