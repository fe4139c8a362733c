package farm

import (
	"bytes"
	"io/fs"
	"net/http"
	"time"

	mapleclient "github.com/maple-farm/maple/clients/js"
)

// WebFS serves the files of root as a game's page, and /maple.js (the
// JavaScript client, clients/js) unless root has its own. Give it to Web,
// or to gateway.Options.Web; --web-root DIR serves a directory this way.
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
