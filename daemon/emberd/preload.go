package emberd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/grpcapi"
	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/oci/image"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// Preload: an appliance leaves the factory with its models ready by
// carrying image archives and endpoint definitions in the preload folder
// (DATA-DIR/preload by default). At start emberd imports every image there
// (docker-save or OCI archives, *.tar, *.tar.gz, *.tgz, or OCI layout
// folders), then creates every template (*.template.json, the body of POST
// /v1/templates), then every endpoint (other *.json, the body of POST
// /v1/endpoints; an endpoint file cannot name a template). What it has done is recorded in a marker file
// (preload.done in the data folder), by entry name, size and modification
// time, so a later start does nothing again; an entry that failed is tried
// again at the next start, and one added later is picked up then.
// An endpoint or template whose name exists already counts as done (a
// changed template file does not update it: ember template update does).

// preloadMarker is the file name of the record of done entries.
const preloadMarker = "preload.done"

// preloadRecord is what the marker holds.
type preloadRecord struct {
	// Done maps an entry's file name to its fingerprint when it was done.
	Done map[string]string `json:"done"`
}

// preloadResult counts what one preload pass did.
type preloadResult struct {
	Images, Templates, Endpoints, Skipped, Failed int
}

// preload runs one pass over dir, creating templates in tmpl and endpoints
// through sched (the scheduler). images is nil for the process runtime, whose endpoints need
// no image: archives are then left for a later start with the runc
// runtime.
func preload(ctx context.Context, dir, dataDir string, images *image.Store, sched endpointCreator, tmpl *templates.Store, log *slog.Logger) (preloadResult, error) {
	var res preloadResult
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("preload: read %s: %w", dir, err)
	}
	markerPath := filepath.Join(dataDir, preloadMarker)
	rec := preloadRecord{Done: map[string]string{}}
	if b, err := os.ReadFile(markerPath); err == nil {
		if err := json.Unmarshal(b, &rec); err != nil {
			return res, fmt.Errorf("preload: marker %s is damaged (%v): remove it to preload again", markerPath, err)
		}
		if rec.Done == nil {
			rec.Done = map[string]string{}
		}
	}
	var imgs, tmpls, eps []os.DirEntry
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "."):
		case e.IsDir() && fileExists(filepath.Join(dir, name, "oci-layout")):
			imgs = append(imgs, e)
		case !e.IsDir() && (strings.HasSuffix(name, ".tar") || strings.HasSuffix(name, ".tar.gz") || strings.HasSuffix(name, ".tgz")):
			imgs = append(imgs, e)
		case !e.IsDir() && strings.HasSuffix(name, ".template.json"):
			tmpls = append(tmpls, e)
		case !e.IsDir() && strings.HasSuffix(name, ".json"):
			eps = append(eps, e)
		default:
			log.Warn("preload: ignoring an entry that is neither an image nor an endpoint definition", "entry", filepath.Join(dir, name))
		}
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Name() < imgs[j].Name() })
	sort.Slice(tmpls, func(i, j int) bool { return tmpls[i].Name() < tmpls[j].Name() })
	sort.Slice(eps, func(i, j int) bool { return eps[i].Name() < eps[j].Name() })
	save := func() error {
		b, _ := json.MarshalIndent(rec, "", "  ")
		tmp := markerPath + ".tmp"
		if err := os.WriteFile(tmp, b, 0o640); err != nil {
			return err
		}
		return os.Rename(tmp, markerPath)
	}
	// Images first: endpoints name them.
	for _, e := range imgs {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		path := filepath.Join(dir, e.Name())
		fp := fingerprint(e)
		if rec.Done[e.Name()] == fp {
			res.Skipped++
			continue
		}
		if images == nil {
			log.Warn("preload: image archives need the runc runtime; left for a later start", "entry", path)
			res.Failed++
			continue
		}
		start := time.Now()
		img, err := images.Import(ctx, path, image.ImportOptions{})
		if err != nil {
			log.Error("preload: import image", "entry", path, "err", err)
			res.Failed++
			continue
		}
		log.Info("preload: image imported", "entry", path, "names", img.Names, "took", time.Since(start).Round(time.Millisecond))
		res.Images++
		rec.Done[e.Name()] = fp
		if err := save(); err != nil {
			return res, fmt.Errorf("preload: write marker: %w", err)
		}
	}
	// Templates before endpoints, so that a later version of the
	// endpoint files could name them.
	for _, e := range tmpls {
		path := filepath.Join(dir, e.Name())
		fp := fingerprint(e)
		if rec.Done[e.Name()] == fp {
			res.Skipped++
			continue
		}
		created, err := preloadTemplate(ctx, path, tmpl, log)
		switch {
		case err != nil:
			log.Error("preload: create template", "entry", path, "err", err)
			res.Failed++
			continue
		case created:
			log.Info("preload: template created", "entry", path)
			res.Templates++
		default:
			log.Info("preload: template exists already", "entry", path)
			res.Skipped++
		}
		rec.Done[e.Name()] = fp
		if err := save(); err != nil {
			return res, fmt.Errorf("preload: write marker: %w", err)
		}
	}
	for _, e := range eps {
		path := filepath.Join(dir, e.Name())
		fp := fingerprint(e)
		if rec.Done[e.Name()] == fp {
			res.Skipped++
			continue
		}
		created, err := preloadEndpoint(ctx, path, sched, log)
		switch {
		case err != nil:
			log.Error("preload: create endpoint", "entry", path, "err", err)
			res.Failed++
			continue
		case created != "":
			log.Info("preload: endpoint created", "entry", path, "endpoint", created)
			res.Endpoints++
		default:
			log.Info("preload: endpoint exists already", "entry", path)
			res.Skipped++
		}
		rec.Done[e.Name()] = fp
		if err := save(); err != nil {
			return res, fmt.Errorf("preload: write marker: %w", err)
		}
	}
	return res, nil
}

// endpointCreator creates endpoints (the scheduler does).
type endpointCreator interface {
	CreateEndpoint(ctx context.Context, sp spec.EndpointSpec) (store.Endpoint, error)
}

// preloadEndpoint creates the endpoint defined in path through the
// scheduler, read as CreateEndpoint reads its request, with the audit
// record CreateEndpoint leaves; it returns its id, or "" when an endpoint
// of that name exists already.
func preloadEndpoint(ctx context.Context, path string, sched endpointCreator, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var ep emberv1.Endpoint
	if err := protojson.Unmarshal(b, &ep); err != nil {
		return "", fmt.Errorf("%s is not an endpoint definition (the body of POST /v1/endpoints): %v", path, err)
	}
	sp, err := grpcapi.CreateSpec(&ep)
	if err != nil {
		return "", fmt.Errorf("%s: %s", path, status.Convert(err).Message())
	}
	// The audit trail names the preload folder as the actor.
	ctx = auth.WithCaller(ctx, auth.Caller{KeyID: "preload", Name: "preload", Scope: auth.Admin})
	e, err := sched.CreateEndpoint(ctx, sp)
	if err != nil {
		// No id yet: the object is the name asked for.
		audit.Record(ctx, log, audit.EndpointCreate, ep.GetName(), err, slog.String("name", ep.GetName()))
		if errors.Is(err, scheduler.ErrExists) || strings.Contains(err.Error(), "already exists") {
			return "", nil
		}
		return "", fmt.Errorf("%s: %s", path, err.Error())
	}
	audit.Record(ctx, log, audit.EndpointCreate, e.ID, nil, slog.String("endpoint", e.ID), slog.String("name", e.Name))
	return e.ID, nil
}

// preloadTemplate creates the template defined in path (the body of POST
// /v1/templates, at most limits.TemplateBody bytes) with the audit record
// the API leaves; it reports false when a template of that name exists
// already (a built-in's name included).
func preloadTemplate(ctx context.Context, path string, tmpl *templates.Store, log *slog.Logger) (bool, error) {
	if tmpl == nil {
		return false, fmt.Errorf("%s: this daemon has no template store", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limits.TemplateBody+1))
	if err != nil {
		return false, err
	}
	if len(b) > limits.TemplateBody {
		return false, fmt.Errorf("%s is over the template size limit of %d bytes (limits.TemplateBody)", path, limits.TemplateBody)
	}
	var t templates.Template
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return false, fmt.Errorf("%s is not a template (the body of POST /v1/templates): %v", path, err)
	}
	ctx = auth.WithCaller(ctx, auth.Caller{KeyID: "preload", Name: "preload", Scope: auth.Admin})
	_, err = tmpl.Create(t)
	if errors.Is(err, templates.ErrExists) {
		return false, nil
	}
	audit.Record(ctx, log, audit.TemplateCreate, t.Name, err, slog.String("image", t.Image))
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// fingerprint identifies an entry's content cheaply: its size and
// modification time (a folder's are its own, not its files').
func fingerprint(e os.DirEntry) string {
	info, err := e.Info()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", info.Size(), info.ModTime().UnixNano())
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
