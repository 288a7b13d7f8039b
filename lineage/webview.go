package lineage

import (
	"embed"
	"io/fs"
	"net/http"
)

// web holds the web view: one HTML page, a stylesheet and a script, plain
// JavaScript and SVG with nothing fetched from the network.
//
//go:embed web
var web embed.FS

// RegisterWebView mounts the web view at /lineage on mux. It reads the API
// that Register mounts.
func RegisterWebView(mux Mux) {
	sub, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/lineage/", http.FileServerFS(sub))
	mux.Handle("GET /lineage", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, sub, "index.html")
	}))
	mux.Handle("GET /lineage/{file}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("file") == "" || r.PathValue("file") == "index.html" {
			http.Redirect(w, r, "/lineage", http.StatusMovedPermanently)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
}
