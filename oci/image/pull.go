package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// PullOptions tune one Pull.
type PullOptions struct {
	// PlainHTTP allows talking to the registry (and its token server) over
	// unencrypted http://. Without it Pull speaks only HTTPS, verified
	// against the system's roots.
	PlainHTTP bool
	// Username and Password are sent to the registry with HTTP basic
	// authentication, or to its token server, when it asks for them. Empty:
	// anonymous.
	Username, Password string
	// CertsDir is a docker/containerd certs.d folder: CertsDir/HOST[:PORT]/
	// holds *.crt files of CAs trusted for that registry besides the
	// system's roots, and *.cert + *.key pairs (client.cert, client.key)
	// of client certificates for mutual TLS. Empty or missing: the
	// system's roots alone.
	CertsDir string
	// AuthFile is a docker config.json whose "auths" give the registry's
	// credentials when Username is empty. Empty: none.
	AuthFile string
	// Log receives a warning for each failed attempt that is retried
	// (never with credentials); nil: slog.Default().
	Log *slog.Logger
	// Progress, if set, is called with bytes done and bytes in total, one
	// call at a time: first as the blobs download, then as the image is
	// imported (the total then grows by what the import reads).
	Progress func(done, total int64)

	// client replaces the HTTP client (tests: a TLS server's roots).
	client *http.Client
	// retryBase replaces pullRetryBase (tests).
	retryBase time.Duration
}

// Media types a registry may answer a manifest request with.
var manifestAccept = strings.Join([]string{
	mediaTypeOCIIndex, mediaTypeOCIManifest, mediaTypeDockerList, mediaTypeDockerManifest,
}, ", ")

// Pull downloads the image ref names from a registry speaking the OCI
// distribution API (registry v2) and imports it, under ref's canonical
// name when it has a tag; an image pulled by digest alone stays unnamed
// and is addressed by digest (NAME@sha256:...) or ID.
//
// ref must name the registry: "host[:port]/repo[:tag|@digest]"
// ("registry.lan:5000/acme/echo:1"); there is no default registry. For an
// image index, the linux image for this machine's architecture is pulled.
// Every blob is verified against its digest as it streams into a temporary
// OCI layout under the store's tmp/, which Import then reads; the layout
// is removed whatever happens, and on failure nothing new is left in the
// store.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (Image, error) {
	img, err := s.pull(ctx, ref, opts)
	if err != nil {
		return Image{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	return img, nil
}

// registryRef is a parsed pull reference.
type registryRef struct {
	host, repo string
	tag        string // "" when pulled by digest alone
	digest     string
	canonical  string // the name to import under ("" for digest alone)
}

// parseRegistryRef splits ref into registry host, repository, tag and
// digest. A reference without a registry host is refused: the appliance
// has no default registry to fall back on.
func parseRegistryRef(ref string) (registryRef, error) {
	name, tag, digest, err := parseRef(ref)
	if err != nil {
		return registryRef{}, err
	}
	host, repo, ok := strings.Cut(name, "/")
	if !ok || !looksLikeDomain(host) {
		return registryRef{}, fmt.Errorf("image reference %q names no registry: give the registry's host, e.g. registry.lan:5000/%s (there is no default registry such as Docker Hub on an air-gapped appliance)", ref, ref)
	}
	r := registryRef{host: host, repo: repo, tag: tag, digest: digest}
	if tag == "" && digest == "" {
		r.tag = "latest"
	}
	if r.tag != "" {
		r.canonical = name + ":" + r.tag
	}
	return r, nil
}

func (s *Store) pull(ctx context.Context, ref string, opts PullOptions) (Image, error) {
	rr, err := parseRegistryRef(ref)
	if err != nil {
		return Image{}, err
	}
	work, err := s.pullDir()
	if err != nil {
		return Image{}, err
	}
	defer s.dropPullDir(work)

	reg, err := newRegistryClient(rr, opts)
	if err != nil {
		return Image{}, err
	}
	p := &pullProgress{fn: opts.Progress}
	lw := &pullLayout{dir: work, limit: s.opts.MaxImageBytes}
	if err := os.MkdirAll(filepath.Join(work, "blobs", "sha256"), 0o700); err != nil {
		return Image{}, err
	}
	md, err := reg.fetchImage(ctx, lw, p)
	if err != nil {
		return Image{}, err
	}
	index, err := json.Marshal(ociIndex{SchemaVersion: 2, MediaType: mediaTypeOCIIndex, Manifests: []descriptor{md}})
	if err != nil {
		return Image{}, err
	}
	if err := os.WriteFile(filepath.Join(work, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
		return Image{}, err
	}
	if err := os.WriteFile(filepath.Join(work, "index.json"), index, 0o600); err != nil {
		return Image{}, err
	}
	iopts := ImportOptions{Name: rr.canonical}
	if opts.Progress != nil {
		base := p.done
		iopts.Progress = func(done, total int64) { opts.Progress(base+done, base+total) }
	}
	return s.importImage(ctx, work, iopts, rr.canonical == "")
}

// pullDir makes a pull's work directory under tmp/ and keeps cleanTmp
// (GC) away from it while the pull downloads without importMu.
func (s *Store) pullDir() (string, error) {
	s.pullMu.Lock()
	defer s.pullMu.Unlock()
	dir, err := os.MkdirTemp(s.tmpDir(), "pull-")
	if err != nil {
		return "", err
	}
	if s.pulls == nil {
		s.pulls = map[string]bool{}
	}
	s.pulls[filepath.Base(dir)] = true
	return dir, nil
}

func (s *Store) dropPullDir(dir string) {
	removeAll(dir)
	s.pullMu.Lock()
	delete(s.pulls, filepath.Base(dir))
	s.pullMu.Unlock()
}

// pullLayout is the OCI layout a pull downloads into.
type pullLayout struct {
	dir   string
	limit int64 // bytes of blobs in all
}

func (l *pullLayout) blob(digest string) string {
	return filepath.Join(l.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// pullProgress reports the download.
type pullProgress struct {
	fn          func(done, total int64)
	done, total int64
	reported    int64
}

func (p *pullProgress) add(n int64) {
	p.done += n
	if p.fn != nil && (p.done-p.reported >= progressStep || p.done == p.total) {
		p.reported = p.done
		p.fn(p.done, max(p.total, p.done))
	}
}

// registryClient talks to one repository of one registry.
type registryClient struct {
	ref    registryRef
	opts   PullOptions
	scheme string
	client *http.Client
	// auth is the Authorization header to send, once a challenge said
	// which ("Basic ..." or "Bearer <token>").
	auth string
	// credsFrom says where Username and Password came from, for errors:
	// "" (the request, or none) or the auth file's path.
	credsFrom string
	// caFrom is the certs.d folder that was looked at for this registry,
	// for the error of an untrusted certificate ("" without CertsDir).
	caFrom string
	log    *slog.Logger
}

func newRegistryClient(rr registryRef, opts PullOptions) (*registryClient, error) {
	c := &registryClient{ref: rr, opts: opts, scheme: "https", log: opts.Log}
	if c.log == nil {
		c.log = slog.Default()
	}
	if opts.PlainHTTP {
		c.scheme = "http"
	}
	if opts.Username == "" && opts.AuthFile != "" {
		user, pass, ok, err := lookupAuth(opts.AuthFile, rr.host)
		if err != nil {
			return nil, err
		}
		if ok {
			c.opts.Username, c.opts.Password, c.credsFrom = user, pass, opts.AuthFile
		}
	}
	base := opts.client
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// A registry that accepts the connection but never answers is
		// a transient failure, retried like a refused connection.
		tr.ResponseHeaderTimeout = pullHeaderTimeout
		if opts.CertsDir != "" {
			c.caFrom = filepath.Join(opts.CertsDir, rr.host)
			tc, err := registryTLS(opts.CertsDir, rr.host)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = tc
		}
		base = &http.Client{Transport: tr}
	}
	cl := *base
	cl.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if req.URL.Scheme != "https" && !opts.PlainHTTP {
			return fmt.Errorf("registry redirected to %s, plain HTTP: %s", req.URL.Redacted(), plainHTTPHint)
		}
		return nil
	}
	c.client = &cl
	return c, nil
}

// plainHTTPHint names the option that allows plain HTTP.
const plainHTTPHint = "plain HTTP is refused unless allowed with the PlainHTTP option (ember image pull --plain-http)"

// fetchImage downloads the manifest (through an index if there is one),
// config and layers into the layout and returns the manifest's descriptor.
func (c *registryClient) fetchImage(ctx context.Context, lw *pullLayout, p *pullProgress) (descriptor, error) {
	want := c.ref.digest
	reference := c.ref.tag
	if want != "" {
		reference = want
	}
	body, mt, err := c.fetchManifest(ctx, reference, want)
	if err != nil {
		return descriptor{}, err
	}
	if isIndexMediaType(mt) {
		d, err := pickPlatform(body, c.ref)
		if err != nil {
			return descriptor{}, err
		}
		if body, mt, err = c.fetchManifest(ctx, d.Digest, d.Digest); err != nil {
			return descriptor{}, err
		}
		if isIndexMediaType(mt) {
			return descriptor{}, fmt.Errorf("manifest %s for linux/%s is itself an image index: nested indexes are not supported", d.Digest, runtime.GOARCH)
		}
	}
	var m ociManifest
	if err := decodeJSON(body, &m, "manifest"); err != nil {
		return descriptor{}, err
	}
	if m.MediaType == "" {
		m.MediaType = mt
	}
	if err := checkManifest(&m); err != nil {
		return descriptor{}, err
	}
	blobs := append([]descriptor{m.Config}, m.Layers...)
	seen := map[string]bool{}
	var todo []descriptor
	for i, d := range blobs {
		if _, err := parseDigest(d.Digest); err != nil {
			return descriptor{}, fmt.Errorf("manifest blob %d: %w", i, err)
		}
		if d.Size < 0 || d.Size > lw.limit {
			return descriptor{}, fmt.Errorf("%w: blob %s is %d bytes, more than the limit of %d", ErrTooLarge, d.Digest, d.Size, lw.limit)
		}
		if i == 0 && d.Size > maxJSONSize {
			return descriptor{}, fmt.Errorf("config %s is %d bytes, more than the %d allowed for a JSON document", d.Digest, d.Size, maxJSONSize)
		}
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		todo = append(todo, d)
		p.total += d.Size
		if p.total > lw.limit {
			return descriptor{}, fmt.Errorf("%w: the image's blobs are more than the limit of %d bytes", ErrTooLarge, lw.limit)
		}
	}
	for i, d := range todo {
		what := "layer " + d.Digest
		if i == 0 {
			what = "config " + d.Digest
		}
		if err := c.fetchBlob(ctx, lw, d, what, p); err != nil {
			return descriptor{}, err
		}
	}
	md := descriptor{MediaType: m.MediaType, Digest: digestOf(body), Size: int64(len(body))}
	if err := os.WriteFile(lw.blob(md.Digest), body, 0o600); err != nil {
		return descriptor{}, err
	}
	return md, nil
}

// pickPlatform selects this machine's image from an index.
func pickPlatform(body []byte, rr registryRef) (descriptor, error) {
	var idx ociIndex
	if err := decodeJSON(body, &idx, "image index"); err != nil {
		return descriptor{}, err
	}
	var have []string
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			continue
		}
		if d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH {
			return d, nil
		}
		pl := d.Platform.OS + "/" + d.Platform.Architecture
		if d.Platform.Variant != "" {
			pl += "/" + d.Platform.Variant
		}
		have = append(have, pl)
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return descriptor{}, fmt.Errorf("%s/%s has no image for linux/%s (platforms: %s)", rr.host, rr.repo, runtime.GOARCH, strings.Join(have, ", "))
}

// fetchManifest GETs a manifest by tag or digest; want, if set, is the
// digest its bytes must have. It returns the body and its media type.
func (c *registryClient) fetchManifest(ctx context.Context, reference, want string) (body []byte, mt string, err error) {
	err = c.retry(ctx, "manifest "+c.ref.repo+":"+reference, func() error {
		var err error
		body, mt, err = c.fetchManifestOnce(ctx, reference, want)
		return err
	})
	return body, mt, err
}

func (c *registryClient) fetchManifestOnce(ctx context.Context, reference, want string) ([]byte, string, error) {
	resp, err := c.get(ctx, "/v2/"+c.ref.repo+"/manifests/"+reference, manifestAccept)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", c.statusError(resp, "manifest "+c.ref.repo+":"+reference)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONSize+1))
	if err != nil {
		return nil, "", transientIf(fmt.Errorf("reading manifest %s: %w", reference, err), 0)
	}
	if len(body) > maxJSONSize {
		return nil, "", fmt.Errorf("manifest %s is more than the %d bytes allowed for a JSON document", reference, maxJSONSize)
	}
	got := digestOf(body)
	if want == "" {
		want = resp.Header.Get("Docker-Content-Digest")
		if !strings.HasPrefix(want, "sha256:") {
			want = ""
		}
	}
	if want != "" && got != want {
		return nil, "", fmt.Errorf("manifest %s: %w: expected %s, registry sent %s", reference, ErrDigestMismatch, want, got)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	json.Unmarshal(body, &probe)
	switch {
	case isKnownManifest(mt):
	case isKnownManifest(probe.MediaType):
		mt = probe.MediaType
	default:
		if probe.MediaType != "" {
			mt = probe.MediaType
		}
		return nil, "", fmt.Errorf("manifest %s has media type %q, which is not supported (want an OCI or Docker v2 image manifest or index)", reference, mt)
	}
	if probe.MediaType != "" && probe.MediaType != mt {
		return nil, "", fmt.Errorf("manifest %s: registry says media type %q, the manifest says %q", reference, mt, probe.MediaType)
	}
	return body, mt, nil
}

func isKnownManifest(mt string) bool {
	return isIndexMediaType(mt) || mt == mediaTypeOCIManifest || mt == mediaTypeDockerManifest
}

// fetchBlob streams a blob into the layout, verifying size and digest;
// only verified content gets the blob's name.
// A failed attempt starts the blob again from its first byte.
func (c *registryClient) fetchBlob(ctx context.Context, lw *pullLayout, d descriptor, what string, p *pullProgress) error {
	return c.retry(ctx, what, func() error {
		start := p.done
		err := c.fetchBlobOnce(ctx, lw, d, what, p)
		if err != nil {
			p.done = start // the retry counts its bytes again
		}
		return err
	})
}

func (c *registryClient) fetchBlobOnce(ctx context.Context, lw *pullLayout, d descriptor, what string, p *pullProgress) error {
	resp, err := c.get(ctx, "/v2/"+c.ref.repo+"/blobs/"+d.Digest, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.statusError(resp, what)
	}
	final := lw.blob(d.Digest)
	partial := final + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(partial) // after a failure; gone by then after Rename
	h := sha256.New()
	cr := &countingReader{r: io.LimitReader(resp.Body, d.Size+1), onRead: p.add}
	n, err := io.Copy(io.MultiWriter(f, h), cr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return transientIf(fmt.Errorf("downloading %s: %w", what, err), 0)
	}
	if n != d.Size {
		return fmt.Errorf("%s: registry sent %d bytes, the manifest says %d", what, n, d.Size)
	}
	if got := hashSum(h); got != d.Digest {
		return fmt.Errorf("%s: %w: registry sent content with digest %s", what, ErrDigestMismatch, got)
	}
	return os.Rename(partial, final)
}

// get sends a GET, answering an authentication challenge once.
// A 429 or 5xx answer is returned as a transientError (its body closed).
func (c *registryClient) get(ctx context.Context, path, accept string) (*http.Response, error) {
	resp, err := c.send(ctx, path, accept)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		challenge := resp.Header.Get("WWW-Authenticate")
		resp.Body.Close()
		if err := c.authenticate(ctx, challenge); err != nil {
			return nil, err
		}
		if resp, err = c.send(ctx, path, accept); err != nil {
			return nil, err
		}
	}
	if isTransientStatus(resp.StatusCode) {
		defer resp.Body.Close()
		return nil, &transientError{err: c.statusError(resp, strings.TrimPrefix(path, "/v2/"+c.ref.repo+"/")), retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	}
	return resp, nil
}

func (c *registryClient) send(ctx context.Context, path, accept string) (*http.Response, error) {
	u := c.scheme + "://" + c.ref.host + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, c.transportError(c.ref.host, err)
	}
	return resp, nil
}

// transportError explains a plain-HTTP registry contacted over HTTPS.
// An untrusted certificate names the certs.d file that would trust it.
// A connection error or timeout is a transientError.
func (c *registryClient) transportError(host string, err error) error {
	if !c.opts.PlainHTTP && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("registry %s speaks plain HTTP, not HTTPS: %s", host, plainHTTPHint)
	}
	if isCertError(err) {
		where := "a certs.d folder (emberd --registry-certs-dir) as HOST[:PORT]/ca.crt"
		if c.caFrom != "" {
			where = filepath.Join(c.caFrom, "ca.crt")
		}
		return fmt.Errorf("registry %s: %w: to trust the registry's CA, put it (PEM) in %s", host, err, where)
	}
	if isTLSAlert(err) && strings.Contains(err.Error(), "certificate") {
		where := "a certs.d folder (emberd --registry-certs-dir) as HOST[:PORT]/client.cert and client.key"
		if c.caFrom != "" {
			where = filepath.Join(c.caFrom, "client.cert") + " and client.key"
		}
		return fmt.Errorf("registry %s refused the TLS handshake: %w: if it wants a client certificate, put the certificate and its key (PEM) in %s", host, err, where)
	}
	return transientIf(fmt.Errorf("registry %s: %w", host, err), 0)
}

// authenticate answers a 401's challenge: Basic with the credentials, or
// Bearer with a token from the challenge's realm.
func (c *registryClient) authenticate(ctx context.Context, challenge string) error {
	if c.auth != "" {
		return fmt.Errorf("registry %s refused the credentials%s (401 Unauthorized)", c.ref.host, c.credsSource())
	}
	scheme, params := parseChallenge(challenge)
	switch strings.ToLower(scheme) {
	case "basic":
		if c.opts.Username == "" {
			return fmt.Errorf("registry %s requires a username and password (401 Unauthorized)%s", c.ref.host, c.noCredsHint())
		}
		req, _ := http.NewRequest(http.MethodGet, "/", nil)
		req.SetBasicAuth(c.opts.Username, c.opts.Password)
		c.auth = req.Header.Get("Authorization")
		return nil
	case "bearer":
		tok, err := c.fetchToken(ctx, params)
		if err != nil {
			return err
		}
		c.auth = "Bearer " + tok
		return nil
	default:
		return fmt.Errorf("registry %s asks for authentication this client does not speak (WWW-Authenticate: %q)", c.ref.host, challenge)
	}
}

// fetchToken gets a bearer token from the realm of a challenge, the
// docker token flow: GET realm?service=...&scope=..., basic credentials if
// there are any.
func (c *registryClient) fetchToken(ctx context.Context, params map[string]string) (string, error) {
	realm := params["realm"]
	u, err := url.Parse(realm)
	if err != nil || realm == "" || u.Host == "" {
		return "", fmt.Errorf("registry %s: bearer challenge has no usable realm (%q)", c.ref.host, realm)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && c.opts.PlainHTTP:
	case u.Scheme == "http":
		return "", fmt.Errorf("registry %s sends for tokens to %s, plain HTTP: %s", c.ref.host, u.Redacted(), plainHTTPHint)
	default:
		return "", fmt.Errorf("registry %s: token realm %q is not an http(s) URL", c.ref.host, realm)
	}
	q := u.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	scope := params["scope"]
	if scope == "" {
		scope = "repository:" + c.ref.repo + ":pull"
	}
	q.Set("scope", scope)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if c.opts.Username != "" {
		req.SetBasicAuth(c.opts.Username, c.opts.Password)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return "", c.transportError(u.Host, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		if c.opts.Username == "" {
			return "", fmt.Errorf("token server %s refused an anonymous token for %s (%s): give a username and password%s", u.Host, scope, resp.Status, c.noCredsHint())
		}
		return "", fmt.Errorf("token server %s refused the credentials%s for %s (%s)", u.Host, c.credsSource(), scope, resp.Status)
	case isTransientStatus(resp.StatusCode):
		return "", &transientError{err: fmt.Errorf("token server %s: %s", u.Host, resp.Status), retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("token server %s: %s", u.Host, resp.Status)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return "", fmt.Errorf("token server %s: bad answer: %w", u.Host, err)
	}
	if tok.Token == "" {
		tok.Token = tok.AccessToken
	}
	if tok.Token == "" {
		return "", fmt.Errorf("token server %s answered no token", u.Host)
	}
	return tok.Token, nil
}

// parseChallenge splits a WWW-Authenticate header into its scheme and
// parameters (key=value or key="quoted, value").
func parseChallenge(h string) (string, map[string]string) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		key = strings.ToLower(strings.TrimSpace(key))
		after = strings.TrimLeft(after, " ")
		var val string
		if strings.HasPrefix(after, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				b.WriteByte(after[i])
			}
			val, rest = b.String(), after[min(i+1, len(after)):]
		} else {
			val, rest, _ = strings.Cut(after, ",")
			rest = "," + rest
		}
		params[key] = strings.TrimSpace(val)
		rest = strings.TrimLeft(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return scheme, params
}

// statusError explains a registry's non-200 answer, with the message from
// its error body when it sends one.
func (c *registryClient) statusError(resp *http.Response, what string) error {
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	msg := ""
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) == nil && len(body.Errors) > 0 {
		msg = ": " + body.Errors[0].Code
		if m := body.Errors[0].Message; m != "" {
			msg += " (" + m + ")"
		}
	}
	where := c.ref.host + "/" + c.ref.repo
	switch resp.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%w: registry %s has no %s (404 Not Found%s); check the repository and tag", ErrNotFound, where, what, msg)
	case http.StatusUnauthorized:
		return fmt.Errorf("registry %s refused access to %s (401 Unauthorized%s): check the username and password%s", where, what, msg, c.credsSource())
	case http.StatusForbidden:
		return fmt.Errorf("registry %s forbids access to %s (403 Forbidden%s)", where, what, msg)
	}
	return fmt.Errorf("registry %s: %s: %s%s", where, what, resp.Status, msg)
}
