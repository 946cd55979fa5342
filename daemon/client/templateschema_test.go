package client

import (
	"reflect"
	"strings"
	"testing"

	"github.com/emberhq/ember/daemon/templates"
)

// TestTemplateSchema: the client's copies of the template types (the
// client imports nothing of the daemon) have the daemon's JSON fields, by
// name and kind, so a field added to daemon/templates and not here fails.
func TestTemplateSchema(t *testing.T) {
	for _, tc := range []struct{ client, daemon reflect.Type }{
		{reflect.TypeFor[Template](), reflect.TypeFor[templates.Template]()},
		{reflect.TypeFor[TemplateEnv](), reflect.TypeFor[templates.EnvVar]()},
	} {
		cf, df := jsonFields(tc.client), jsonFields(tc.daemon)
		for name, k := range df {
			if ck, ok := cf[name]; !ok {
				t.Errorf("%s lacks %s's JSON field %q", tc.client, tc.daemon, name)
			} else if ck != k {
				t.Errorf("%s.%s is a %s, %s's a %s", tc.client, name, ck, tc.daemon, k)
			}
		}
		for name := range cf {
			if _, ok := df[name]; !ok {
				t.Errorf("%s has JSON field %q, which %s does not", tc.client, name, tc.daemon)
			}
		}
	}
}

// jsonFields maps a struct's JSON field names to their Go kinds.
func jsonFields(typ reflect.Type) map[string]reflect.Kind {
	out := map[string]reflect.Kind{}
	for _, f := range reflect.VisibleFields(typ) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			continue
		}
		out[name] = f.Type.Kind()
	}
	return out
}
