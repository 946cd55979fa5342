package console

import (
	"io/fs"
	"path"
	"regexp"
	"strings"
	"testing"
)

// svgNS is the one absolute URL the console may name: the SVG namespace,
// an identifier that is never fetched.
const svgNS = "http://www.w3.org/2000/svg"

var (
	absURL     = regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	jsImport   = regexp.MustCompile(`(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'([^']+)'`)
	consoleRef = regexp.MustCompile(`/console/([A-Za-z0-9_-]+\.(?:js|css|svg|png|html))`)
	inlineJS   = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|\son[a-z]+\s*=`)
	webStorage = regexp.MustCompile(`\b(?:localStorage|sessionStorage|indexedDB|document\.cookie)\b`)
)

func assets(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := fs.WalkDir(Assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Assets, p)
		files[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := files["index.html"]; !ok {
		t.Fatal("no index.html at the root of the console's assets")
	}
	return files
}

// TestAssetsSelfContained: the console loads nothing from outside the
// appliance, and everything it names is embedded.
func TestAssetsSelfContained(t *testing.T) {
	files := assets(t)
	for name, body := range files {
		for _, u := range absURL.FindAllString(strings.ReplaceAll(body, svgNS, ""), -1) {
			t.Errorf("%s names an outside URL %q: the console must load nothing from outside emberd", name, u)
		}
		for _, m := range consoleRef.FindAllStringSubmatch(body, -1) {
			if _, ok := files[m[1]]; !ok {
				t.Errorf("%s refers to /console/%s, which is not embedded", name, m[1])
			}
		}
		if path.Ext(name) != ".js" {
			continue
		}
		for _, m := range jsImport.FindAllStringSubmatch(body, -1) {
			if !strings.HasPrefix(m[1], "./") {
				t.Errorf("%s imports %q: only the console's own modules (./NAME.js)", name, m[1])
				continue
			}
			if _, ok := files[path.Join(path.Dir(name), m[1])]; !ok {
				t.Errorf("%s imports %s, which is not embedded", name, m[1])
			}
		}
	}
}

// TestNoInlineScriptNoStorage: the pages run under a CSP without inline
// script (daemon/httpapi/console.go), and the key and the CSRF token are
// kept in memory, never in web storage or a readable cookie.
func TestNoInlineScriptNoStorage(t *testing.T) {
	for name, body := range assets(t) {
		switch path.Ext(name) {
		case ".html":
			if m := inlineJS.FindString(body); m != "" {
				t.Errorf("%s has inline script (%q): the CSP refuses it", name, m)
			}
		case ".js":
			if m := webStorage.FindString(body); m != "" {
				t.Errorf("%s uses %s: the console keeps nothing in the browser but the HttpOnly cookie", name, m)
			}
		}
	}
}

// TestMatchers: the checks above catch what they are for.
func TestMatchers(t *testing.T) {
	for _, tc := range []struct {
		re   *regexp.Regexp
		text string
		want bool
	}{
		{absURL, `<link href="https://cdn.example.com/x.css">`, true},
		{absURL, `@import url(//fonts.googleapis.com/css)`, true},
		{absURL, `fetch('/v1/endpoints')`, false},
		{jsImport, `import { h } from './dom.js';`, true},
		{jsImport, `await import('./poll.js')`, true},
		{consoleRef, `<script src="/console/app.js">`, true},
		{consoleRef, `api('POST', '/console/session')`, false},
		{inlineJS, `<script>alert(1)</script>`, true},
		{inlineJS, `<button onclick="x()">`, true},
		{inlineJS, `<script type="module" src="/console/app.js"></script>`, false},
		{webStorage, `localStorage.setItem('k', v)`, true},
		{webStorage, `session.csrfToken = s.csrfToken`, false},
	} {
		if got := tc.re.MatchString(tc.text); got != tc.want {
			t.Errorf("%v on %q: %v, want %v", tc.re, tc.text, got, tc.want)
		}
	}
}
