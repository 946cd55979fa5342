package templates

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

func echoTemplate(name string) Template {
	return Template{
		Name: name, Image: "ghcr.io/acme/echo:1", Description: "echo",
		Env:        []EnvVar{{Name: "GREETING", Default: "hi"}, {Name: "TOKEN", Required: true, Description: "the upstream token", Secret: true}},
		WorkersMax: 2, IdleTimeoutSec: 10,
	}
}

func TestStorePersistsAndReopens(t *testing.T) {
	s, path := openTemp(t)
	clock := time.UnixMilli(1_000_000)
	s.now = func() time.Time { return clock }
	created, err := s.Create(echoTemplate("echo"))
	if err != nil {
		t.Fatal(err)
	}
	if created.Version != 1 || created.CreatedAt != 1_000_000 || created.UpdatedAt != 1_000_000 || created.Builtin {
		t.Fatalf("created = %+v; want version 1, times set, not built in", created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}

	clock = clock.Add(time.Second)
	u := echoTemplate("")
	u.Description = "echo, changed"
	updated, err := s.Update("echo", u)
	if err != nil {
		t.Fatal(err)
	}
	if updated.Version != 2 || updated.CreatedAt != 1_000_000 || updated.UpdatedAt != 1_001_000 || updated.Name != "echo" {
		t.Fatalf("updated = %+v; want version 2, createdAt kept, updatedAt moved", updated)
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Get("echo")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || got.Description != "echo, changed" || len(got.Env) != 2 || !got.Env[1].Secret {
		t.Fatalf("reopened = %+v", got)
	}
	if err := s2.Delete("echo"); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Get("echo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete and reopen: %v, want ErrNotFound", err)
	}
}

func TestStoreListOrder(t *testing.T) {
	s, _ := openTemp(t)
	for _, n := range []string{"zeta", "alpha", "mid"} {
		if _, err := s.Create(echoTemplate(n)); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, tp := range s.List() {
		names = append(names, tp.Name)
	}
	want := "basic vllm text-embeddings alpha mid zeta"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("List = %s, want %s", got, want)
	}
	l := s.List()
	if !l[0].Builtin || l[3].Builtin {
		t.Errorf("builtin flags: %v %v", l[0].Builtin, l[3].Builtin)
	}
	// The list is a copy: changing it changes nothing stored.
	l[0].Env = append(l[0].Env, EnvVar{Name: "X"})
	l[1].Env[0].Name = "CHANGED"
	if b, _ := s.Get("vllm"); b.Env[0].Name != "MODEL_NAME" {
		t.Errorf("built-in changed through List's result: %+v", b.Env[0])
	}
}

func TestStoreRefusals(t *testing.T) {
	s, _ := openTemp(t)
	if _, err := s.Create(echoTemplate("echo")); err != nil {
		t.Fatal(err)
	}
	stale := echoTemplate("echo")
	stale.Version = 7
	cases := []struct {
		name string
		do   func() error
		want error
		text string
	}{
		{"create taken", func() error { _, err := s.Create(echoTemplate("echo")); return err }, ErrExists, "echo"},
		{"create built-in name", func() error { _, err := s.Create(echoTemplate("vllm")); return err }, ErrExists, "built-in"},
		{"create builtin flag", func() error { tp := echoTemplate("x"); tp.Builtin = true; _, err := s.Create(tp); return err }, nil, "builtin: "},
		{"update built-in", func() error { _, err := s.Update("basic", echoTemplate("basic")); return err }, ErrBuiltin, "cannot be changed"},
		{"update missing", func() error { _, err := s.Update("nope", echoTemplate("nope")); return err }, ErrNotFound, "nope"},
		{"update rename", func() error { _, err := s.Update("echo", echoTemplate("other")); return err }, nil, "name: "},
		{"update stale version", func() error { _, err := s.Update("echo", stale); return err }, ErrConflict, "version 1"},
		{"delete built-in", func() error { return s.Delete("text-embeddings") }, ErrBuiltin, "cannot be deleted"},
		{"delete missing", func() error { return s.Delete("nope") }, ErrNotFound, "nope"},
		{"get missing", func() error { _, err := s.Get("nope"); return err }, ErrNotFound, "nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("err = %q, want it to contain %q", err, tc.text)
			}
		})
	}
	if got, _ := s.Get("echo"); got.Version != 1 {
		t.Errorf("a refused update changed the template: %+v", got)
	}
}

func TestStoreLimit(t *testing.T) {
	s, _ := openTemp(t)
	for i := range limits.MaxTemplates {
		s.ops[strings.Repeat("a", 1)+string(rune('a'+i%26))+strings.Repeat("0", i/26)] = echoTemplate("x")
	}
	if len(s.ops) != limits.MaxTemplates {
		t.Fatalf("setup: %d templates", len(s.ops))
	}
	if _, err := s.Create(echoTemplate("one-more")); !errors.Is(err, ErrFull) {
		t.Fatalf("create past the limit: %v, want ErrFull", err)
	}
}

func TestValidate(t *testing.T) {
	with := func(f func(*Template)) Template { tp := echoTemplate("echo"); f(&tp); return tp }
	cases := []struct {
		name  string
		tp    Template
		field string
		msg   string
	}{
		{"ok", echoTemplate("echo"), "", ""},
		{"no name", with(func(t *Template) { t.Name = "" }), "name", "is required"},
		{"upper case", with(func(t *Template) { t.Name = "Echo" }), "name", "lower-case"},
		{"underscore", with(func(t *Template) { t.Name = "my_echo" }), "name", "lower-case"},
		{"leading dash", with(func(t *Template) { t.Name = "-echo" }), "name", "starting with"},
		{"long name", with(func(t *Template) { t.Name = strings.Repeat("a", 64) }), "name", "over the limit of 63"},
		{"no image", with(func(t *Template) { t.Image = "" }), "image", "is required"},
		{"bad env name", with(func(t *Template) { t.Env[0].Name = "1X" }), "env[0].name", "not a valid variable name"},
		{"env twice", with(func(t *Template) { t.Env[1].Name = "GREETING"; t.Env[1].Required = false }), "env.GREETING", "twice"},
		{"required with default", with(func(t *Template) { t.Env[1].Default = "x" }), "env.TOKEN", "required and has a default"},
		{"workers", with(func(t *Template) { t.WorkersMax = 5000 }), "workersMax", "between 1 and 1000"},
		{"gpus", with(func(t *Template) { t.GPUCount = 99 }), "gpuCount", "between 0 and 16"},
		{"min over max", with(func(t *Template) { t.WorkersMin = 3 }), "workersMin", "must not exceed workersMax"},
		{"scaler", with(func(t *Template) { t.ScalerType = "CPU" }), "scalerType", "QUEUE_DELAY"},
		{"long category", with(func(t *Template) { t.Category = strings.Repeat("c", 64) }), "category", "over the limit"},
		{"too big", with(func(t *Template) { t.Description = strings.Repeat("d", limits.TemplateBody) }), "template", "over the limit of 262144 bytes"},
		{"env value too big", with(func(t *Template) { t.Env[0].Default = strings.Repeat("v", limits.EnvEntry) }), "env", "over the limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.tp)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want a *FieldError", err, err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("err = %q, want field %s and %q", err, tc.field, tc.msg)
			}
			if err.Error() != fe.Field+": "+fe.Msg {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestBuiltins(t *testing.T) {
	s, _ := openTemp(t)
	b, err := s.Get("basic")
	if err != nil {
		t.Fatal(err)
	}
	if b.Image != "ember/example-worker:latest" || b.GPUCount != 0 || b.WorkersMax != 2 || b.IdleTimeoutSec != 30 || b.Category != "handler" || !b.Builtin || b.Version != 1 {
		t.Errorf("basic = %+v", b)
	}
	v, _ := s.Get("vllm")
	if v.GPUCount != 1 || !strings.Contains(v.Description, "/v2/{endpoint}/openai/v1") {
		t.Errorf("vllm = %+v", v)
	}
	req := map[string]bool{}
	for _, e := range v.Env {
		req[e.Name] = e.Required
		if e.Description == "" {
			t.Errorf("vllm %s has no description", e.Name)
		}
	}
	for _, n := range []string{"MODEL_NAME", "MAX_MODEL_LEN", "DTYPE", "TENSOR_PARALLEL_SIZE", "QUANTIZATION", "GPU_MEMORY_UTILIZATION", "OPENAI_SERVED_MODEL_NAME_OVERRIDE", "HF_TOKEN"} {
		if _, ok := req[n]; !ok {
			t.Errorf("vllm lacks %s", n)
		}
	}
	if !req["MODEL_NAME"] {
		t.Error("vllm MODEL_NAME is not required")
	}
	e, _ := s.Get("text-embeddings")
	if len(e.Env) == 0 || e.Env[0].Name != "MODEL_NAMES" || !e.Env[0].Required {
		t.Errorf("text-embeddings env = %+v", e.Env)
	}
}

func TestResolve(t *testing.T) {
	tp := echoTemplate("echo")
	tp.Version = 4
	tp.Command = []string{"/bin/echo"}
	tp.GPUTypes = []string{"H100"}
	two, zero, ninety := 2, 0, 90
	cases := []struct {
		name  string
		d     Deploy
		field string
		msg   string
		check func(t *testing.T, e spec.Endpoint)
	}{
		{name: "missing required", d: Deploy{Name: "ep"}, field: "env.TOKEN", msg: "required: the upstream token"},
		{name: "empty required", d: Deploy{Name: "ep", Env: map[string]string{"TOKEN": ""}}, field: "env.TOKEN", msg: "required"},
		{name: "no name", d: Deploy{Env: map[string]string{"TOKEN": "t"}}, field: "name", msg: "is required"},
		{name: "defaults", d: Deploy{Name: "ep", Env: map[string]string{"TOKEN": "t"}}, check: func(t *testing.T, e spec.Endpoint) {
			if e.Name != "ep" || e.Image != "ghcr.io/acme/echo:1" || e.Env["GREETING"] != "hi" || e.Env["TOKEN"] != "t" || len(e.Env) != 2 {
				t.Errorf("endpoint = %+v", e)
			}
			if e.WorkersMax != 2 || e.IdleTimeoutSec != 10 || e.GPUCount != 0 || e.GPUTypes[0] != "H100" || e.Command[0] != "/bin/echo" {
				t.Errorf("settings = %+v", e)
			}
			if e.ExecutionTimeoutMs != spec.DefaultExecutionTimeoutMs || e.ScalerType != spec.ScalerQueueDelay {
				t.Errorf("zero template fields did not take the endpoint defaults: %+v", e)
			}
			if e.Template != "echo" || e.TemplateVersion != 4 {
				t.Errorf("template recorded as %q v%d", e.Template, e.TemplateVersion)
			}
		}},
		{name: "overrides and extra env", d: Deploy{Name: "ep", Env: map[string]string{"TOKEN": "t", "GREETING": "yo", "EXTRA": "1"},
			GPUCount: &two, GPUTypes: []string{}, WorkersMin: &zero, WorkersMax: &two, IdleTimeoutSec: &ninety},
			check: func(t *testing.T, e spec.Endpoint) {
				if e.Env["GREETING"] != "yo" || e.Env["EXTRA"] != "1" || e.GPUCount != 2 || len(e.GPUTypes) != 0 || e.WorkersMax != 2 || e.IdleTimeoutSec != 90 {
					t.Errorf("endpoint = %+v", e)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := tp.Resolve(tc.d)
			if tc.field != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Msg, tc.msg) {
					t.Fatalf("err = %v, want field %s with %q", err, tc.field, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e := spec.Default()
			sp.Apply(&e)
			if err := spec.Validate(&e); err != nil {
				t.Fatalf("resolved endpoint does not validate: %v", err)
			}
			tc.check(t, e)
		})
	}
	// Resolve shares nothing with the template.
	sp, _ := tp.Resolve(Deploy{Name: "ep", Env: map[string]string{"TOKEN": "t"}})
	(*sp.Command)[0] = "changed"
	if tp.Command[0] != "/bin/echo" {
		t.Error("Resolve's command aliases the template's")
	}
}

func TestOpenRefusesBadFiles(t *testing.T) {
	for name, body := range map[string]string{
		"not json": "{",
		"version":  `{"version":9,"templates":[]}`,
		"repeated": `{"version":1,"templates":[{"name":"a","image":"i"},{"name":"a","image":"i"}]}`,
		"built-in": `{"version":1,"templates":[{"name":"basic","image":"i"}]}`,
		"no name":  `{"version":1,"templates":[{"image":"i"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(path); err == nil {
				t.Fatal("Open accepted it")
			}
		})
	}
}

// TestStoreWriteFailureChangesNothing: a change whose file cannot be
// written is refused and leaves the store as it was.
func TestStoreWriteFailureChangesNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "missing-dir", FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(echoTemplate("echo")); err == nil {
		t.Fatal("Create succeeded without a writable file")
	}
	if _, err := s.Get("echo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a failed create: %v, want ErrNotFound", err)
	}
	if n := len(s.List()); n != 3 {
		t.Fatalf("%d templates listed, want the 3 built-ins", n)
	}
}
