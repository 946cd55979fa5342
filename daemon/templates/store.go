package templates

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

// FileName is the store's file in the data directory.
const FileName = "templates.json"

// fileVersion is the version of the file this package writes.
const fileVersion = 1

// maxCategoryLen caps a template's category: a short label for grouping.
const maxCategoryLen = 63

var (
	// ErrNotFound is returned (wrapped) for a template no one has.
	ErrNotFound = errors.New("template not found")
	// ErrExists is returned (wrapped) by Create for a name already taken.
	ErrExists = errors.New("template already exists")
	// ErrBuiltin is returned (wrapped) for a change to a built-in template.
	ErrBuiltin = errors.New("built-in template")
	// ErrFull is returned (wrapped) by Create when the store holds
	// limits.MaxTemplates operator templates.
	ErrFull = errors.New("too many templates")
	// ErrConflict is returned (wrapped) by Update when the template given
	// names a version that is no longer the current one.
	ErrConflict = errors.New("template changed")
)

// FieldError is a validation failure naming the field by its JSON name
// ("image", "env.MODEL_NAME", "workersMax"); its Error is "field: msg". It
// is the scheduler's own type, so the API answers both alike.
type FieldError = spec.FieldError

// nameRE is a template name: lower-case letters, digits and '-', starting
// with a letter or digit (a subset of endpoint names, so a template's name
// is always a valid endpoint name too).
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// envNameRE is an environment variable name, as endpoints take them.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// file is the JSON document on disk.
type file struct {
	Version   int        `json:"version"`
	Templates []Template `json:"templates"`
}

// Store holds the operator's templates in one JSON file (mode 0600,
// rewritten atomically on every change, as daemon/keys does) and the
// built-in ones, compiled in and never written. It is safe for concurrent
// use.
type Store struct {
	path string
	now  func() time.Time

	mu  sync.Mutex
	ops map[string]Template // operator templates by name
}

// Open loads the store at path (usually DATA-DIR/templates.json); a missing
// file is an empty store, created on the first change. A file whose
// templates no longer validate (a limit tightened since) is still loaded:
// they are the operator's, and a deploy from one reports what is wrong.
func Open(path string) (*Store, error) {
	s := &Store{path: path, now: time.Now, ops: map[string]Template{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("templates: %s is not a template file: %w", path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("templates: %s has version %d; this emberd reads version %d", path, f.Version, fileVersion)
	}
	for _, t := range f.Templates {
		if t.Name == "" || s.ops[t.Name].Name != "" || isBuiltin(t.Name) {
			return nil, fmt.Errorf("templates: %s: empty, repeated or built-in template name %q", path, t.Name)
		}
		t.Builtin = false
		s.ops[t.Name] = t
	}
	return s, nil
}

// List returns every template: the built-in ones first, in their own
// order, then the operator's by name.
func (s *Store) List() []Template {
	out := builtins()
	s.mu.Lock()
	ops := slices.Collect(maps.Values(s.ops))
	s.mu.Unlock()
	slices.SortFunc(ops, func(a, b Template) int { return cmp.Compare(a.Name, b.Name) })
	for _, t := range ops {
		out = append(out, t.clone())
	}
	return out
}

// Get returns the template called name, or an error wrapping ErrNotFound.
func (s *Store) Get(name string) (Template, error) {
	if t, ok := builtin(name); ok {
		return t, nil
	}
	s.mu.Lock()
	t, ok := s.ops[name]
	s.mu.Unlock()
	if !ok {
		return Template{}, fmt.Errorf("%w: %q (list them with ember template list)", ErrNotFound, name)
	}
	return t.clone(), nil
}

// Create adds an operator template at version 1. Version, CreatedAt and
// UpdatedAt are set by the store (what t gives is ignored: they are
// output); Builtin must be false. Errors: a *FieldError for an invalid
// template, ErrExists, ErrFull, or a write error.
func (s *Store) Create(t Template) (Template, error) {
	if t.Builtin {
		return Template{}, &FieldError{Field: "builtin", Msg: "only Ember's own templates are built in; leave it out"}
	}
	if err := Validate(t); err != nil {
		return Template{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if isBuiltin(t.Name) {
		return Template{}, fmt.Errorf("%w: %q is a built-in template; pick another name", ErrExists, t.Name)
	}
	if _, ok := s.ops[t.Name]; ok {
		return Template{}, fmt.Errorf("%w: %q; change it with ember template update, or delete it first", ErrExists, t.Name)
	}
	if len(s.ops) >= limits.MaxTemplates {
		return Template{}, fmt.Errorf("%w: this daemon holds %d, the limit (limits.MaxTemplates); delete one first", ErrFull, len(s.ops))
	}
	now := s.now().UnixMilli()
	t = t.clone()
	t.Version, t.CreatedAt, t.UpdatedAt = 1, now, now
	if err := s.writeLocked(t.Name, &t); err != nil {
		return Template{}, err
	}
	return t.clone(), nil
}

// Update replaces the operator template called name with t, as a whole,
// at the next version. t.Name must be empty or name (a template is not
// renamed); t.Version, when not 0, must be the current version (so that an
// edit of an older copy does not overwrite a newer one: ErrConflict).
// Errors: ErrBuiltin, ErrNotFound, ErrConflict, a *FieldError, or a write
// error.
func (s *Store) Update(name string, t Template) (Template, error) {
	if isBuiltin(name) {
		return Template{}, fmt.Errorf("%w: %q cannot be changed; create your own from it (ember template show %s --json)", ErrBuiltin, name, name)
	}
	if t.Name == "" {
		t.Name = name
	}
	if t.Name != name {
		return Template{}, &FieldError{Field: "name", Msg: fmt.Sprintf("is %q but the template updated is %q: a template cannot be renamed (create the new one and delete the old)", t.Name, name)}
	}
	if t.Builtin {
		return Template{}, &FieldError{Field: "builtin", Msg: "only Ember's own templates are built in; leave it out"}
	}
	if err := Validate(t); err != nil {
		return Template{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.ops[name]
	if !ok {
		return Template{}, fmt.Errorf("%w: %q (list them with ember template list)", ErrNotFound, name)
	}
	if t.Version != 0 && t.Version != old.Version {
		return Template{}, fmt.Errorf("%w: %q is at version %d, the update was made from version %d; show it again and redo the change", ErrConflict, name, old.Version, t.Version)
	}
	t = t.clone()
	t.Version, t.CreatedAt, t.UpdatedAt = old.Version+1, old.CreatedAt, max(s.now().UnixMilli(), old.UpdatedAt)
	if err := s.writeLocked(name, &t); err != nil {
		return Template{}, err
	}
	return t.clone(), nil
}

// Delete removes the operator template called name. Errors: ErrBuiltin,
// ErrNotFound, or a write error. Endpoints deployed from it are not
// touched: they keep what it gave them.
func (s *Store) Delete(name string) error {
	if isBuiltin(name) {
		return fmt.Errorf("%w: %q cannot be deleted", ErrBuiltin, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ops[name]; !ok {
		return fmt.Errorf("%w: %q (list them with ember template list)", ErrNotFound, name)
	}
	return s.writeLocked(name, nil)
}

// writeLocked writes the store with name set to *t (nil: removed), then,
// once the file is written, makes the change in memory: a failed write
// changes nothing. s.mu is held.
func (s *Store) writeLocked(name string, t *Template) error {
	next := maps.Clone(s.ops)
	if t == nil {
		delete(next, name)
	} else {
		next[name] = *t
	}
	f := file{Version: fileVersion, Templates: slices.SortedFunc(maps.Values(next), func(a, b Template) int { return cmp.Compare(a.Name, b.Name) })}
	if f.Templates == nil {
		f.Templates = []Template{}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("templates: %w", err)
	}
	if err := keys.WriteFileAtomic(s.path, append(b, '\n')); err != nil {
		return fmt.Errorf("templates: %w", err)
	}
	s.ops = next
	return nil
}

// clone is t sharing no slices with the original.
func (t Template) clone() Template {
	t.Command = slices.Clone(t.Command)
	t.Env = slices.Clone(t.Env)
	t.GPUTypes = slices.Clone(t.GPUTypes)
	return t
}

// Validate checks a template as Create and Update do: its name, image and
// environment, its JSON size (limits.TemplateBody), and the endpoint it
// describes, by resolving a trial deploy (every required variable given)
// and running the scheduler's own validation, so that a limit reads the
// same for a template as for an endpoint.
func Validate(t Template) error {
	switch {
	case t.Name == "":
		return &FieldError{Field: "name", Msg: "is required"}
	case len(t.Name) > limits.EndpointName:
		return &FieldError{Field: "name", Msg: fmt.Sprintf("is %d characters, over the limit of %d", len(t.Name), limits.EndpointName)}
	case !nameRE.MatchString(t.Name):
		return &FieldError{Field: "name", Msg: fmt.Sprintf("must be 1-%d characters of lower-case letters, digits and '-', starting with a letter or digit", limits.EndpointName)}
	case t.Image == "":
		return &FieldError{Field: "image", Msg: "is required: the image a deployed endpoint's workers run (ember image list shows those imported)"}
	case len(t.Category) > maxCategoryLen:
		return &FieldError{Field: "category", Msg: fmt.Sprintf("is %d characters, over the limit of %d", len(t.Category), maxCategoryLen)}
	case len(t.Env) > limits.EnvEntries:
		return &FieldError{Field: "env", Msg: fmt.Sprintf("has %d variables, over the limit of %d", len(t.Env), limits.EnvEntries)}
	}
	seen := make(map[string]bool, len(t.Env))
	for i, v := range t.Env {
		switch {
		case !envNameRE.MatchString(v.Name):
			return &FieldError{Field: fmt.Sprintf("env[%d].name", i), Msg: fmt.Sprintf("%q is not a valid variable name (letters, digits and '_', not starting with a digit)", v.Name)}
		case seen[v.Name]:
			return &FieldError{Field: "env." + v.Name, Msg: "is listed twice"}
		case v.Required && v.Default != "":
			return &FieldError{Field: "env." + v.Name, Msg: "is required and has a default: a required variable is one a deploy must give; drop the default or required"}
		}
		seen[v.Name] = true
	}
	if b, err := json.Marshal(t); err != nil {
		return fmt.Errorf("templates: %w", err)
	} else if len(b) > limits.TemplateBody {
		return &FieldError{Field: "template", Msg: fmt.Sprintf("is %d bytes as JSON, over the limit of %d bytes", len(b), limits.TemplateBody)}
	}
	trial := Deploy{Name: t.Name, Env: map[string]string{}}
	for _, v := range t.Env {
		if v.Required {
			trial.Env[v.Name] = "x"
		}
	}
	sp, err := t.Resolve(trial)
	if err != nil {
		return err
	}
	e := spec.Default()
	sp.Apply(&e)
	return spec.Validate(&e)
}
