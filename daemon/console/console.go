// Package console holds the web console's static assets (ui/), embedded in
// emberd so that the page loads nothing from outside the appliance. The
// assets are plain HTML, CSS and JavaScript modules with no build step:
// what is committed is what the browser runs.
//
// The HTTP surface serves them (daemon/httpapi/console.go); the console
// talks to emberd through the same /v1 and /v2 API as the CLI, with a
// session cookie in place of the key (daemon/httpapi/session.go).
//
// The pages carry no inline script and no on* attributes: the Content
// Security Policy they are served with (daemon/httpapi/console.go) runs
// scripts only from emberd's own files.
package console

import (
	"embed"
	"io/fs"
)

//go:embed ui
var embedded embed.FS

// Assets is the console's files, index.html at the root.
var Assets fs.FS = mustSub(embedded, "ui")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}
